"""The Dockerfile, read with a small parser (no Docker engine here): stages, pins, user, health."""

from __future__ import annotations

import argparse
import fnmatch
import re

import pytest

from service.cli import fetch, serve
from tests.deploy.dockerfile import Dockerfile, Stage, expand, instructions, parse, read
from tests.support.deploy import ROOT

DOCKERFILE = read(ROOT / "Dockerfile")
FLAVORS = ("cpu", "cuda")
# `torch`, `"torch==2.13.0"`, `torch>=2` as a pip argument; not the "pytorch.org" of a URL.
TORCH_REQUIREMENT = re.compile(r"""(?<![\w./-])torch(?:[=<>!~]=?[^\s"']*)?(?=["']?(?:\s|$))""")
SECRET_WORDS = re.compile(r"KEY|TOKEN|PASSWORD|SECRET", re.IGNORECASE)


# --- the parser ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FROM a:1\nRUN echo hi", [("FROM", "a:1"), ("RUN", "echo hi")]),
        ("RUN a \\\n    b \\\n    c", [("RUN", "a b c")]),
        ("RUN a \\\n  # a comment inside\n  b", [("RUN", "a b")]),
        ("# syntax=docker/dockerfile:1\n\nfrom x:1 as y", [("FROM", "x:1 as y")]),
        ('CMD ["serve"]', [("CMD", '["serve"]')]),
    ],
    ids=["lines", "continuations", "comment inside a continuation", "directive, case", "exec"],
)
def test_instructions_are_read_as_docker_reads_them(
    text: str, expected: list[tuple[str, str]]
) -> None:
    assert [(i.keyword, i.args) for i in instructions(text)] == expected


def test_a_file_ending_inside_a_continuation_is_an_error() -> None:
    with pytest.raises(ValueError, match="continued"):
        instructions("RUN a \\")


@pytest.mark.parametrize(
    ("args", "exec_form"),
    [
        ('["a", "b"]', ["a", "b"]),
        ("a b", None),
        ("['a', 'b']", None),  # not JSON: Docker runs it through /bin/sh -c
        ('["a", 1]', None),
    ],
    ids=["json array", "shell form", "single quotes", "not strings"],
)
def test_exec_form_is_a_json_array_of_strings(args: str, exec_form: list[str] | None) -> None:
    [ins] = instructions(f"CMD {args}")
    assert ins.exec_form == exec_form


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("img-${F}", "img-cpu"),
        ("img-$F", "img-cpu"),
        ("${MISSING:-fallback}", "fallback"),
        ("${F:-fallback}", "cpu"),
    ],
    ids=["braces", "bare", "default used", "default unused"],
)
def test_arg_expansion(text: str, expected: str) -> None:
    assert expand(text, {"F": "cpu"}) == expected


def test_stages_chain_through_global_args() -> None:
    df = parse("ARG F=a\nFROM x:1 AS base-a\nFROM y:1 AS base-b\nFROM base-${F} AS final\nUSER 1")
    assert [s.name for s in df.chain()] == ["final", "base-a"]
    assert [s.name for s in df.chain({"F": "b"})] == ["final", "base-b"]


# --- our Dockerfile ------------------------------------------------------------------------


def final(flavor: str) -> Stage:
    return DOCKERFILE.chain({"FLAVOR": flavor})[0]


def external_images(df: Dockerfile, flavor: str) -> list[str]:
    names = {s.name for s in df.stages}
    refs = [df.resolve_from(s, {"FLAVOR": flavor}) for s in df.stages]
    return [r for r in refs if r not in names]


def test_is_multi_stage_and_cpu_by_default() -> None:
    assert len(DOCKERFILE.stages) >= 2
    assert DOCKERFILE.global_args["FLAVOR"] == "cpu"
    assert DOCKERFILE.chain() == DOCKERFILE.chain({"FLAVOR": "cpu"})


@pytest.mark.parametrize("flavor", FLAVORS)
def test_base_images_are_pinned(flavor: str) -> None:
    for image in external_images(DOCKERFILE, flavor):
        if "@sha256:" in image:
            continue
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag, f"{image} has no tag"
        assert tag != "latest", image
        # A version, not a moving alias such as "3.11-slim".
        assert re.match(r"\d+\.\d+\.\d+", tag), f"{image}: pin a full version"


def test_runtime_bases_are_python_slim_and_cuda_runtime() -> None:
    cpu = DOCKERFILE.resolve_from(DOCKERFILE.chain({"FLAVOR": "cpu"})[-1], {"FLAVOR": "cpu"})
    cuda = DOCKERFILE.resolve_from(DOCKERFILE.chain({"FLAVOR": "cuda"})[-1], {"FLAVOR": "cuda"})
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", cpu), cpu
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-(cudnn-)?runtime-ubuntu\d+\.\d+", cuda), cuda


@pytest.mark.parametrize("flavor", FLAVORS)
def test_final_stage_runs_as_a_numeric_non_root_user(flavor: str) -> None:
    users = final(flavor).all("USER")
    assert users, "no USER in the final stage: the service would run as root"
    user = users[-1].args.split(":")[0]
    # Numeric, so Kubernetes' runAsNonRoot can verify it (see deploy/k8s/deployment.yaml).
    assert user.isdigit() and int(user) != 0


@pytest.mark.parametrize("flavor", FLAVORS)
def test_final_stage_entrypoint_cmd_and_healthcheck_are_exec_form(flavor: str) -> None:
    stage = final(flavor)
    [entrypoint] = stage.all("ENTRYPOINT")
    [cmd] = stage.all("CMD")
    [health] = stage.all("HEALTHCHECK")
    assert entrypoint.exec_form is not None
    # The console script pyproject.toml installs (no tomllib: the package supports 3.10).
    pyproject = (ROOT / "pyproject.toml").read_text()
    scripts = pyproject.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    assert re.search(rf'^{re.escape(entrypoint.exec_form[0])}\s*=\s*"', scripts, re.M)
    assert cmd.exec_form is not None
    options, _, command = health.args.partition("CMD ")
    check = instructions(f"CMD {command}")[0].exec_form
    assert check is not None and check[0] == "python", "exec form, with the image's Python"
    assert "/livez" in check[-1]
    assert "--interval=" in options and "--timeout=" in options


def cli() -> argparse.ArgumentParser:
    # The subcommands the image runs, registered as the real CLI does.
    parser = argparse.ArgumentParser(prog="colorize-service", exit_on_error=False)
    sub = parser.add_subparsers(dest="command")
    serve.add_parser(sub)
    fetch.add_parser(sub)
    return parser


def test_default_command_is_one_the_cli_accepts() -> None:
    [cmd] = final("cpu").all("CMD")
    assert cmd.exec_form is not None
    assert cli().parse_args(cmd.exec_form).command == "serve"


def test_bake_weights_runs_fetch_weights_with_arguments_the_cli_accepts() -> None:
    stage = DOCKERFILE.stage("weights")
    assert stage.args()["BAKE_WEIGHTS"] == "0", "off by default"
    [run] = [r for r in stage.all("RUN") if "fetch-weights" in r.args]
    words = run.args.split("colorize-service", 1)[1].split(";")[0].split()
    args = cli().parse_args(words)
    assert args.command == "fetch-weights" and str(args.weights_dir) == "/weights"


@pytest.mark.parametrize("flavor", FLAVORS)
def test_runtime_environment(flavor: str) -> None:
    stage = final(flavor)
    env = stage.env()
    assert env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert env["COLORIZE_WEIGHTS_DIR"] == "/weights"
    assert env["COLORIZE_HOST"] == "0.0.0.0"  # reachable through the published port
    assert env["COLORIZE_PORT"] == "8000"
    assert "8000" in " ".join(e.args for e in stage.all("EXPOSE")).split()
    volumes = " ".join(v.args for v in stage.all("VOLUME"))
    assert "/weights" in volumes


def test_torch_is_pinned_to_the_version_ci_tests() -> None:
    venv_script = (ROOT / "scripts" / "_venv.sh").read_text()
    ci_version = re.search(r"torch==\$\{COLORIZE_TORCH_VERSION:-([\d.]+)\}", venv_script)
    assert ci_version, "scripts/_venv.sh no longer pins torch the way this test expects"
    installs = []
    for stage in DOCKERFILE.stages:
        variables = {**DOCKERFILE.global_args, **stage.args()}
        for run in stage.all("RUN"):
            installs += TORCH_REQUIREMENT.findall(expand(run.args, variables))
    assert installs == [f"torch=={ci_version.group(1)}"] == ["torch==2.13.0"]


def test_cpu_build_installs_torch_from_the_cpu_index() -> None:
    [run] = [r for r in DOCKERFILE.stage("deps").all("RUN") if "torch==" in r.args]
    assert "cpu) index=https://download.pytorch.org/whl/cpu" in run.args
    assert '--index-url "$index"' in run.args


def test_no_secret_in_env_or_arg() -> None:
    for stage in DOCKERFILE.stages:
        for key, value in {**stage.env(), **stage.args()}.items():
            assert not (SECRET_WORDS.search(key) and value), f"{key} is baked into the image"
    for key, value in DOCKERFILE.global_args.items():
        assert not (SECRET_WORDS.search(key) and value), key


def test_copied_sources_are_in_the_build_context() -> None:
    # .dockerignore must keep local state out without dropping what the build copies.
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        return any(
            fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/") for p in patterns
        )

    for leaked in (".venv", ".git", "tests", "bench/out", ".pytest_cache", ".mypy_cache"):
        assert ignored(leaked), f"{leaked} would be sent to the builder"
    for stage in DOCKERFILE.stages:
        for copy in stage.all("COPY"):
            if "--from=" in copy.args:
                continue
            *sources, _ = [w for w in copy.args.split() if not w.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists(), source
                assert not ignored(source), f"{source} is copied but .dockerignore drops it"
