"""Running the model: the data plane every model route calls, the served versions, the
loaded model and its runtimes, and the batcher that shares model calls among requests."""
