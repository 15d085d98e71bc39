"""Adapters for the pipeline's ports: AWS (boto3) and in-memory fakes for tests."""
