"""Doors onto the engine: the download API, the service and its request validation, status, bulk actions, review, re-verify, steering and the mirror benchmark."""
