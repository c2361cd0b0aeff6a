"""Model workers: the engine behind a gRPC service (`fireside worker`) and the client a
gateway (`fireside serve --workers`) uses in place of a local engine. No web stack here."""
