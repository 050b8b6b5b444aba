"""`relkd` must not import kserve and tritonclient.grpc into one process (they register
the same protobuf symbols), so the CLI root imports neither, nor torch, up front."""

from __future__ import annotations

import json
import subprocess
import sys


def test_cli_root_imports_no_heavy_or_conflicting_package() -> None:
    code = (
        "import json, sys, ops.cli; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = set(json.loads(subprocess.check_output([sys.executable, "-c", code], text=True)))
    assert not loaded & {"kserve", "tritonclient", "torch"}
