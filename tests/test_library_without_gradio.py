"""The library is usable without Gradio: every nar module imports with gradio made unimportable."""
import pkgutil
import subprocess
import sys
from pathlib import Path

import nar

ROOT = Path(__file__).resolve().parent.parent


def test_every_nar_module_imports_without_gradio():
    modules = sorted(f"nar.{m.name}" for m in pkgutil.iter_modules(nar.__path__))
    assert {"nar.loading", "nar.pipeline", "nar.finetune", "nar.train", "nar.images"} <= set(modules)
    code = ("import sys; sys.modules['gradio'] = None\n"        # `import gradio` now raises ImportError
            "import importlib\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "assert 'gradio' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
            "print('ok', len(" + repr(modules) + "))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ok {len(modules)}"


def test_the_check_would_catch_a_gradio_import():
    code = "import sys; sys.modules['gradio'] = None\nimport ui.inputs"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "gradio" in result.stderr
