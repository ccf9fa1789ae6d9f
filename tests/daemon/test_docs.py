"""The README's Python example runs, copy-pasted, against a dev daemon."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


class TestReadme:
    """What a newcomer copies must work."""

    def test_python_example(self, daemon, tmp_path):
        """The first ```python block of the README runs and exits 0."""
        blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
        assert blocks, "the README has a Python example"
        script = tmp_path / "example.py"
        script.write_text(blocks[0])
        env = {**os.environ, "KEYBROKER_SOCKET": str(daemon.socket)}
        result = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert "refused: ciphertext could not be decrypted" in result.stdout
