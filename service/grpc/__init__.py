"""gRPC: the Open Inference Protocol's and TensorFlow Serving's services, through the data plane.

server.py builds, starts and stops a worker's server; observed.py counts, logs and maps errors
of every call; inference.py and tf_serving.py translate their protocol's messages; generated/
holds the message classes protoc writes from protos/ (generate.py, `make protos`).
"""
