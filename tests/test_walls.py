"""The floors of the package stay apart: checked on fresh interpreters, not on this one."""
import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT

HEAVY = ("zmq", "bottle", "waitress", "yaddb.client", "yaddb.router", "yaddb.transport")


def loaded_after(code: str) -> set[str]:
    """The heavy modules a fresh interpreter holds after running `code`."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize("code", ["import yaddb.lsm", "import yaddb.lsm.workerd",
                                  "from yaddb.lsm import Engine",
                                  "import yaddb.limits, yaddb.placement, yaddb.errors"])
def test_storage_and_ground_floor_load_no_network_code(code):
    assert loaded_after(code) == set()


def test_package_face_loads_the_client_only_when_used():
    assert loaded_after("import yaddb") == set()
    assert loaded_after("from yaddb import key_for, YaddbError, Item") == set()
    assert {"zmq", "yaddb.client"} <= loaded_after("from yaddb import Client")


def test_package_face_names_what_it_has():
    out = subprocess.run([sys.executable, "-c", "import yaddb; print(yaddb.Client.__module__, "
                          "yaddb.key_for(b'x').hex()); yaddb.Nope"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["yaddb.client", "e7fe1aba01e8166d8c78ae6b966dedd7"]
    assert "has no attribute 'Nope'" in out.stderr


@pytest.mark.skipif(shutil.which("lint-imports") is None,
                    reason="import-linter is not installed (requirements.txt pins it)")
def test_import_contracts_are_kept():
    """The same check .ci/run makes, so the README's test command covers it too."""
    out = subprocess.run(["lint-imports", "--no-cache"], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout
