"""Print the server's OpenAPI document without starting a server or loading a model.

`npm run gen:api` turns it into src/lib/api/schema.d.ts (committed, so the web build needs
no Python).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from fireside.server import build_app
from fireside.settings import Settings


def main() -> None:
    # Any model directory will do: build_app only resolves the path; loading waits for start-up.
    bundled = Path(__file__).resolve().parents[2] / "fireside" / "assets" / "fireside-tiny"
    with tempfile.TemporaryDirectory() as data_dir:  # nothing written where the user keeps data
        app = build_app(Settings(model=str(bundled), data_dir=Path(data_dir)))
        json.dump(app.openapi(), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
