"""A chat server in a process of its own, for the crash test: `python -m tests.app_server_main
MODEL_DIR PORT` with the settings in FIRESIDE_* variables."""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn

from fireside.settings import Settings
from tests.app_utils import chat_app

if __name__ == "__main__":
    app = chat_app(Path(sys.argv[1]), Settings())
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
