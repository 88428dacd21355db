"""Each worker's gRPC server: both protocols' services and grpc.health.v1 on FMNIST_GRPC_PORT.

One server per worker, started after the fork (gunicorn.conf.py's post_worker_init, once the
worker's model is loaded) with the worker's app, so its calls reach the same data plane and
batcher as the worker's REST requests and share their model calls. Every worker binds the
port with SO_REUSEPORT (Linux spreads new connections over the workers, as it does HTTP's with
FMNIST_REUSE_PORT). gRPC keeps a connection (HTTP/2) open and sends every call of a
channel down it, so one client channel is served by one worker; many channels spread.
"""

from __future__ import annotations

import threading
from concurrent import futures
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from service.grpc.generated import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc
from service.grpc.generated.tensorflow_serving.apis import (
    prediction_service_pb2,
    prediction_service_pb2_grpc,
)
from service.grpc.inference import InferenceServicer
from service.grpc.observed import Observed
from service.grpc.tf_serving import PredictionServicer

if TYPE_CHECKING:
    from flask import Flask

    from service.inference.versions import ModelVersions

# The services health answers for by name, besides the server as a whole ("").
SERVICES = (
    grpc_predict_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
    prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"].full_name,
)


def serve(app: Flask) -> grpc.Server | None:
    """Start the app's gRPC server on its port; None when FMNIST_GRPC_PORT is 0, or for an app
    that is not the service (a benchmark's, under the same gunicorn.conf.py)."""
    settings = app.extensions.get("settings")
    if settings is None or not settings.grpc_port:
        return None
    server = build(app)
    address = f"{settings.host}:{settings.grpc_port}"
    if not server.add_insecure_port(address):
        raise RuntimeError(f"gRPC could not listen on {address}")
    server.start()
    return server


def build(app: Flask) -> grpc.Server:
    """The app's gRPC server, its services added, not started and bound to no port."""
    settings, plane = app.extensions["settings"], app.extensions["dataplane"]
    server = grpc.server(
        # As many threads as the worker's HTTP side: every call waiting for the model is one,
        # and the batching queue has room for both (Settings.queue_size).
        futures.ThreadPoolExecutor(settings.threads, thread_name_prefix="grpc"),
        interceptors=[Observed(app.extensions["instrumentation"])],
        options=[
            # Always: every worker binds the port (FMNIST_REUSE_PORT is HTTP's choice between
            # that and one shared socket, which gRPC's server cannot inherit from gunicorn).
            ("grpc.so_reuseport", 1),
            # A message over the body limit is refused (RESOURCE_EXHAUSTED) by gRPC as it
            # arrives, before a thread or the data plane sees it.
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_send_message_length", settings.max_body_bytes),
        ],
    )
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceServicer(plane), server
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(plane), server
    )
    health_pb2_grpc.add_HealthServicer_to_server(track_readiness(plane.versions), server)
    return server


def track_readiness(versions: ModelVersions) -> health.HealthServicer:
    """A health service that answers NOT_SERVING until the default version is ready, then
    SERVING, for the server and each service by name."""
    servicer = health.HealthServicer()
    for name in ("", *SERVICES):
        servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    def wait() -> None:
        while not versions.wait_ready(1.0):
            pass
        for name in ("", *SERVICES):
            servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    threading.Thread(target=wait, name="grpc-health", daemon=True).start()
    return servicer


def stop(server: grpc.Server, grace: float) -> None:
    """Refuse new calls, and let those in flight finish for up to `grace` seconds."""
    server.stop(grace).wait(grace + 1)
