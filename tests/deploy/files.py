"""Reading the deployment files the way Docker, Compose and Kubernetes would (no engine needed)."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """ENV instructions (`ENV A=1 B=2` form), later ones winning."""
        out: dict[str, str] = {}
        for args in self.all("ENV"):
            for item in shlex.split(args):
                name, _, value = item.partition("=")
                out[name] = value
        return out


def dockerfile_stages(path: Path = ROOT / "Dockerfile") -> list[Stage]:
    """Instructions per stage, continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
        elif stages:
            stages[-1].instructions.append(Instruction(keyword, args.strip()))
    return stages


def exec_form(args: str) -> list[str]:
    """A CMD/ENTRYPOINT/HEALTHCHECK CMD in JSON (exec) form."""
    value = json.loads(args)
    assert isinstance(value, list)
    return [str(v) for v in value]


def healthcheck_command(stage: Stage) -> list[str]:
    (args,) = stage.all("HEALTHCHECK")
    options = re.match(r"((?:--\S+\s+)*)CMD\s+(.*)$", args)
    assert options is not None, args
    return exec_form(options.group(2))


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert all(isinstance(doc, dict) for doc in docs), path
    return docs


def manifests() -> dict[Path, list[dict[str, Any]]]:
    return {path: load_yaml_documents(path) for path in sorted(K8S.glob("*.yaml"))}


def manifest(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        doc
        for docs in manifests().values()
        for doc in docs
        if doc.get("kind") == kind and (name is None or doc["metadata"]["name"] == name)
    ]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data
