"""Deployment: the local cluster runner; Dockerfile, Kubernetes, nginx and Prometheus files."""
