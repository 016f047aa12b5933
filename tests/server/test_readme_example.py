"""The README's openai-client example runs as written against a real server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import API_KEY, GEMMA3

EXAMPLE = Path(__file__).with_name("readme_example.py")


def test_readme_example_runs(vision_server, tmp_path):
    code = EXAMPLE.read_text()
    for old, new in [
        ('"http://127.0.0.1:8080/v1"', f'"{vision_server.url}/v1"'),
        ('api_key="none"', f'api_key="{API_KEY}"'),
        ('"photo.png"', repr(str(GEMMA3 / "photo.png"))),
    ]:
        assert old in code, f"the example no longer contains {old}"
        code = code.replace(old, new)
    script = tmp_path / "example.py"
    script.write_text(code)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip(), "the example printed no answer"
