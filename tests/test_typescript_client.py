"""A TypeScript client generated from /openapi.json compiles against realistic usage, with no hand edits.

tests/typescript/ pins `openapi-typescript` and `typescript` (package-lock.json); `npm ci` runs when
node_modules is missing or the lock changed (tests/environment.py: the test command runs it before the
suite). The types are generated from the app's own schema into tests/typescript/generated/ (not
committed), then `tsc --noEmit --strict` checks usage.ts: list tasks and read `data[0].title` and
`meta.total`, narrow on `success`, switch exhaustively over `error.code`, build a task body. Node.js
and npm are required: without them this fails, it never skips.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from backend.docs import openapi_text
from tests import environment
from tests.support import openapi_document

HERE = Path(__file__).resolve().parent / "typescript"
MODULES = HERE / "node_modules"
INSTALL_HINT = "`make test` installs it (Debian/Ubuntu: `apt-get install nodejs npm`)"


def run(command: list[str], what: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, cwd=HERE, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0 and what:
        pytest.fail(f"{what} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}", pytrace=False)
    return done


def install() -> None:
    """`npm ci` from the lock (tests/environment.py), only when node_modules is missing or from another lock."""
    if shutil.which("node") is None:
        pytest.fail(f"the typed-client check needs Node.js: {INSTALL_HINT}", pytrace=False)
    try:
        environment.ensure_npm_packages()
    except environment.SetupError as exc:
        pytest.fail(str(exc), pytrace=False)


def generate(schema: dict[str, Any], folder: Path) -> None:
    """openapi.json and the api.d.ts generated from it, in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "openapi.json").write_text(openapi_text(schema), encoding="utf-8")
    generator = str(MODULES / ".bin" / "openapi-typescript")
    # --default-non-nullable false: only `required` makes a field non-optional, not a default value.
    command = [generator, str(folder / "openapi.json"), "--output", str(folder / "api.d.ts")]
    run([*command, "--default-non-nullable", "false"], "openapi-typescript")


def type_check(project: Path) -> subprocess.CompletedProcess[str]:
    return run([str(MODULES / ".bin" / "tsc"), "--noEmit", "--strict", "-p", str(project)], "")


@pytest.fixture(scope="module")
def installed() -> None:
    install()


def test_generated_client_compiles(installed):
    generate(openapi_document(), HERE / "generated")
    done = type_check(HERE / "tsconfig.json")
    assert done.returncode == 0, f"tsc --strict on tests/typescript/usage.ts:\n{done.stdout}{done.stderr}"


def test_the_check_fails_when_a_field_turns_optional_or_a_code_changes(installed, tmp_path):
    """The same usage against a schema where TaskPublic.title is optional, one code is gone and one is new."""
    schema = copy.deepcopy(openapi_document())
    components = schema["components"]["schemas"]
    components["TaskPublic"]["required"].remove("title")
    codes = components["ErrorCode"]["enum"]
    codes.remove("TOO_MANY_STREAMS")
    codes.append("SOMETHING_NEW")
    shutil.copy(HERE / "usage.ts", tmp_path / "usage.ts")
    config = json.loads((HERE / "tsconfig.json").read_text())
    (tmp_path / "tsconfig.json").write_text(json.dumps(config))
    generate(schema, tmp_path / "generated")

    output = (done := type_check(tmp_path / "tsconfig.json")).stdout + done.stderr
    assert done.returncode != 0
    assert "Type 'string | undefined' is not assignable to type 'string'" in output, output  # `first.title`
    assert "Type '\"TOO_MANY_STREAMS\"' is not comparable" in output, output  # its `case` names a code gone
    assert "Type '\"SOMETHING_NEW\"' is not assignable to type 'never'" in output, output  # the exhaustive default
