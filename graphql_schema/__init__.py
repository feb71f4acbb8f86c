"""The GraphQL API: Strawberry types, inputs, permissions, extensions, context and schema."""
