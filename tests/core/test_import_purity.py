import subprocess
import sys


def test_core_imports_no_streaming_dependencies() -> None:
    code = (
        "import sys, banditroute.core\n"
        "bad = [m for m in ('faust', 'pydantic', 'aiokafka', 'orjson', 'yaml') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
