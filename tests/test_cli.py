"""The `llasa` command builds with none of the optional extras installed (the README's first
command installs only the core package)."""

import subprocess
import sys

EXTRAS = ("fastapi", "uvicorn", "resemblyzer", "pocketsphinx", "speechmos", "silero_vad", "jiwer", "librosa",
          "peft", "matplotlib", "pystoi", "pesq", "openai", "selenium", "datasets")  # fmt: skip


def test_parser_builds_without_extras():
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in EXTRAS)
    code = f"import sys; {blocked}; from llasa.cli import build_parser; build_parser().parse_args(['tts', 'x', '-o', 'y.wav'])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
