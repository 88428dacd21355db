"""The HTTP API: thin Flask blueprints, one per protocol, the upload page and the OpenAPI
document. Each route translates its wire format and calls the data plane
(service/inference/dataplane.py)."""
