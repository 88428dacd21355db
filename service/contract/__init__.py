"""The API's contract, declared once as pydantic models: one module per wire format, each
with the refusal table that names the error for each bad field."""
