"""Build the operator's image from the repository's Dockerfile: `make image` (`python -m goodmem_devcluster.image`).

The engine: podman when it is installed, else Docker when its daemon answers; neither: `EngineUnavailable`
says what is missing. The base is the Dockerfile's PYTHON_IMAGE build argument:

- ``public``: the Dockerfile's default, the public Python image (Docker Hub);
- ``debian``: a base made here from Debian packages (`mmdebstrap`: bookworm with its security updates,
  python3, python3-venv, ca-certificates), for machines that reach Debian's mirrors but not Docker Hub;
- ``auto`` (the default): ``public`` when the engine already has it or Docker Hub answers, else ``debian``;
- anything else: an image reference, used as it is.

The Debian base is cached twice, like the control plane's binaries: its root filesystem as a tarball under
``<cache_dir>/images/`` and the imported image in the engine's store; its name carries a digest of the
mmdebstrap inputs, so a change of them builds a new one. A cold base takes mmdebstrap's time (about 30 s),
a warm one nothing; the Dockerfile's own steps are cached by the engine's layer cache.

With podman, on these machines: `--runtime runc` (crun fails with cgroups in hybrid mode), a containers.conf
with ``default_ulimits = []`` (setting rlimits is not permitted; ``CONTAINERS_CONF``, unless already set),
``--network host`` and the host's CA bundle mounted at its own path into the build, named by PIP_CERT, so pip
inside the build trusts what pip outside trusts.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .gobuild import cache_dir

__all__ = [
    "BASE_CHOICES",
    "DEBIAN_BASE",
    "BuildResult",
    "DebianBase",
    "Engine",
    "EngineUnavailable",
    "ImageBuildFailed",
    "build_image",
    "containers_conf",
    "default_tag",
    "find_engine",
    "host_ca_bundle",
    "public_base",
]

ROOT = Path(__file__).resolve().parents[2]
BASE_CHOICES = ("auto", "public", "debian")
#: Where `auto` asks whether Docker Hub answers (any HTTP answer, a 401 included, means it does).
DOCKER_HUB_PROBE = "https://registry-1.docker.io/v2/"
CONTAINERS_CONF_TEXT = """\
# Written by goodmem_devcluster.image for podman on machines where setting rlimits is not permitted
# ("setrlimit ... Operation not permitted"): no default ulimits. Used through CONTAINERS_CONF.
[containers]
default_ulimits = []
"""


class EngineUnavailable(RuntimeError):
    """No container engine to build or run with; the message says what is missing and how to get it."""


class ImageBuildFailed(RuntimeError):
    """A step of the image build (mmdebstrap, import, build) exited non-zero."""


def _log(msg: str) -> None:
    print(f"[image] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------- engine
def containers_conf() -> Path:
    """The containers.conf podman is run with (written into the cache once): ``default_ulimits = []``."""
    path = cache_dir() / "containers.conf"
    if not path.is_file() or path.read_text() != CONTAINERS_CONF_TEXT:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(CONTAINERS_CONF_TEXT)
        os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class Engine:
    """A container engine's CLI: podman or docker, with the options this machine needs."""

    name: str
    path: str
    runtime: str | None = None  # podman's --runtime (runc when installed)
    conf: Path | None = None  # podman's CONTAINERS_CONF, when we set it

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.conf is not None:
            env["CONTAINERS_CONF"] = str(self.conf)
        if self.name == "docker":
            env["DOCKER_BUILDKIT"] = "1"
        return env

    def command(self, *args: str) -> list[str]:
        """argv for the engine's CLI; podman's --runtime is a global option (`podman build` has none of its own)."""
        runtime = ["--runtime", self.runtime] if self.runtime else []
        return [self.path, *runtime, *args]

    def run(self, *args: str, check: bool = True, timeout: float | None = 120.0) -> subprocess.CompletedProcess[str]:
        """The engine's CLI, output captured as text; check=True raises ImageBuildFailed with its stderr."""
        res = subprocess.run(
            self.command(*args),
            env=self.env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and res.returncode != 0:
            raise ImageBuildFailed(
                f"{self.name} {shlex.join(args[:3])}... exited {res.returncode}: {res.stderr.strip()}"
            )
        return res

    def image_exists(self, ref: str) -> bool:
        args = ("image", "exists", ref) if self.name == "podman" else ("image", "inspect", ref)
        return self.run(*args, check=False, timeout=60).returncode == 0

    def image_size(self, ref: str) -> int:
        """The image's size in bytes, as the engine reports it (uncompressed layers)."""
        return int(self.run("image", "inspect", "--format", "{{.Size}}", ref).stdout.strip())


def find_engine() -> Engine:
    """podman if installed (with runc and our containers.conf), else docker if its daemon answers.

    GOODMEM_CONTAINER_ENGINE=podman|docker chooses. EngineUnavailable names what is missing.
    """
    wanted = os.environ.get("GOODMEM_CONTAINER_ENGINE") or ""
    missing: list[str] = []
    if wanted in ("", "podman"):
        podman = shutil.which("podman")
        if podman:
            runc = shutil.which("runc") or shutil.which("runc", path="/usr/sbin:/sbin")  # not on a non-root PATH
            conf = None if os.environ.get("CONTAINERS_CONF") else containers_conf()
            return Engine("podman", podman, runtime="runc" if runc else None, conf=conf)
        missing.append("podman is not installed (not on PATH)")
    if wanted in ("", "docker"):
        docker = shutil.which("docker")
        if docker is None:
            missing.append("docker is not installed (not on PATH)")
        else:
            res = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=30, check=False)
            if res.returncode == 0:
                return Engine("docker", docker)
            missing.append(
                f"docker is installed but its daemon does not answer ('docker info': {res.stderr.strip()[:200]})"
            )
    raise EngineUnavailable(
        "no container engine: "
        + "; ".join(missing)
        + ". Install podman (as root: apt-get install podman runc mmdebstrap; `make install` does it when run as "
        "root on Debian/Ubuntu) or start a Docker daemon."
    )


# ----------------------------------------------------------------------------------------------- the bases
def public_base(dockerfile: Path = ROOT / "Dockerfile") -> str:
    """The Dockerfile's default PYTHON_IMAGE (the public Python image)."""
    m = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile.read_text(), re.M)
    if not m:
        raise ValueError(f"{dockerfile} declares no default PYTHON_IMAGE")
    return m.group(1)


@dataclass(frozen=True)
class DebianBase:
    """A Python base image made from Debian packages by mmdebstrap."""

    suite: str = "bookworm"
    packages: tuple[str, ...] = ("python3", "python3-venv", "ca-certificates")
    mirrors: tuple[str, ...] = (
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    )
    #: No documentation, manual pages or translations in the image (the copyright files stay).
    dpkg_options: tuple[str, ...] = (
        "path-exclude=/usr/share/doc/*",
        "path-include=/usr/share/doc/*/copyright",
        "path-exclude=/usr/share/man/*",
        "path-exclude=/usr/share/info/*",
        "path-exclude=/usr/share/locale/*",
    )
    #: What `podman import` / `docker import` sets in the image's configuration (an imported tarball has none).
    changes: tuple[str, ...] = (
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        'CMD ["python3"]',
    )

    def mmdebstrap_args(self, target: Path) -> list[str]:
        return [
            "mmdebstrap",
            "--variant=minbase",
            f"--include={','.join(self.packages)}",
            *(f"--dpkgopt={opt}" for opt in self.dpkg_options),
            self.suite,
            str(target),
            *self.mirrors,
        ]

    @property
    def digest(self) -> str:
        """12 hex digits of the inputs: a change of suite, packages, mirrors or options is a new base."""
        inputs = json.dumps([self.mmdebstrap_args(Path("rootfs.tar")), list(self.changes)])
        return hashlib.sha256(inputs.encode()).hexdigest()[:12]

    @property
    def ref(self) -> str:
        return f"localhost/goodmem-operator-base:{self.suite}-{self.digest}"

    @property
    def tarball(self) -> Path:
        return cache_dir() / "images" / f"base-{self.suite}-{self.digest}.tar"


DEBIAN_BASE = DebianBase()


@contextlib.contextmanager
def _cache_lock() -> Iterator[None]:
    lock_path = cache_dir() / "images" / ".lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log(f"another process is building into {lock_path.parent}; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _run_visibly(cmd: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 1800.0) -> None:
    """Run `cmd` with its output on stderr (a long step shows its progress); ImageBuildFailed if it fails."""
    _log("$ " + shlex.join(cmd))
    res = subprocess.run(list(cmd), env=env, stdout=2, timeout=timeout, check=False)  # all of it on stderr (fd 2)
    if res.returncode != 0:
        raise ImageBuildFailed(f"{shlex.join(cmd[:2])}... exited {res.returncode} (its output is above)")


def ensure_debian_base(engine: Engine, base: DebianBase = DEBIAN_BASE, *, refresh: bool = False) -> str:
    """The Debian base in the engine's store: imported from the cached tarball, made by mmdebstrap if there is
    none (or `refresh`). Returns its reference."""
    with _cache_lock():
        if not refresh and engine.image_exists(base.ref):
            _log(f"base {base.ref}: in {engine.name}'s store (cached)")
            return base.ref
        if refresh or not base.tarball.is_file():
            if shutil.which("mmdebstrap") is None:
                raise EngineUnavailable(
                    "the Debian base must be made and mmdebstrap is not installed: "
                    "apt-get install mmdebstrap (as root; `make install` does it), or choose BASE=public"
                )
            base.tarball.parent.mkdir(parents=True, exist_ok=True)
            tmp = base.tarball.with_name(f".{base.tarball.name}.{os.getpid()}.tmp.tar")
            started = time.monotonic()
            _log(f"base: making a Debian {base.suite} root filesystem with mmdebstrap (about 30 s; cached after)")
            try:
                _run_visibly(base.mmdebstrap_args(tmp))
                os.replace(tmp, base.tarball)
            finally:
                tmp.unlink(missing_ok=True)
            size_mb = base.tarball.stat().st_size / 1e6
            _log(f"base: {base.tarball} ({size_mb:.0f} MB) in {time.monotonic() - started:.0f} s")
        changes = [arg for change in base.changes for arg in ("--change", change)]
        _run_visibly(engine.command("import", *changes, str(base.tarball), base.ref), env=engine.env())
        return base.ref


def docker_hub_answers(timeout: float = 5.0) -> bool:
    """Whether Docker Hub's registry answers at all (a 401 is an answer)."""
    opener = urllib.request.build_opener()
    try:
        opener.open(DOCKER_HUB_PROBE, timeout=timeout).close()
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False
    return True


def choose_base(engine: Engine, base: str, *, refresh: bool = False) -> tuple[str, str]:
    """(image reference for PYTHON_IMAGE, why) for `base` (auto, public, debian or a reference)."""
    if base == "public":
        return public_base(), "asked for (BASE=public)"
    if base == "debian":
        return ensure_debian_base(engine, refresh=refresh), "asked for (BASE=debian)"
    if base != "auto":
        return base, "asked for"
    public = public_base()
    if engine.image_exists(public):
        return public, f"{engine.name} has it"
    if docker_hub_answers():
        return public, "Docker Hub answers"
    return ensure_debian_base(
        engine, refresh=refresh
    ), "Docker Hub does not answer, so a Debian base made by mmdebstrap"


# ---------------------------------------------------------------------------------------------------- build
def default_tag() -> str:
    """goodmem-operator:<the project's version>."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return f"goodmem-operator:{version}"


def host_ca_bundle() -> Path | None:
    """The CA bundle pip uses on this machine: PIP_CERT, else the `cert` `pip config list` names, else certifi's."""
    candidates: list[str] = []
    if os.environ.get("PIP_CERT"):
        candidates.append(os.environ["PIP_CERT"])
    res = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60, check=False
    )
    candidates += re.findall(r"^\S*\.cert='([^']+)'$", res.stdout, re.M)
    with contextlib.suppress(ImportError):
        import certifi

        candidates.append(certifi.where())
    return next((Path(c) for c in candidates if Path(c).is_file()), None)


def build_command(
    engine: Engine, tag: str, python_image: str, ca_bundle: Path | None, context: Path = ROOT
) -> list[str]:
    """The engine's build command for the repository's Dockerfile."""
    args = ["build", "--network", "host", "--build-arg", f"PYTHON_IMAGE={python_image}", "-t", tag]
    if engine.name == "podman" and ca_bundle is not None:
        args += ["-v", f"{ca_bundle}:{ca_bundle}:ro", "--build-arg", f"PIP_CERT={ca_bundle}"]
    return engine.command(*args, "-f", str(context / "Dockerfile"), str(context))


@dataclass
class BuildResult:
    tag: str
    engine: str
    base: str
    size_bytes: int
    seconds: float
    steps: dict[str, float] = field(default_factory=dict)


def build_image(tag: str | None = None, base: str = "auto", *, refresh_base: bool = False) -> BuildResult:
    """Build the image (EngineUnavailable when there is no engine); print what it does and its size."""
    tag = tag or default_tag()
    started = time.monotonic()
    engine = find_engine()
    conf = f", CONTAINERS_CONF={engine.conf}" if engine.conf else ""
    _log(f"engine: {engine.name} ({engine.path}{', runtime ' + engine.runtime if engine.runtime else ''}{conf})")
    python_image, why = choose_base(engine, base, refresh=refresh_base)
    base_seconds = time.monotonic() - started
    _log(f"base: {python_image} ({why})")
    bundle = host_ca_bundle() if engine.name == "podman" else None
    if bundle is not None:
        _log(f"pip in the build trusts {bundle} (mounted read-only at the same path, PIP_CERT)")
    build_started = time.monotonic()
    _run_visibly(build_command(engine, tag, python_image, bundle), env=engine.env())
    size = engine.image_size(tag)
    result = BuildResult(
        tag=tag,
        engine=engine.name,
        base=python_image,
        size_bytes=size,
        seconds=time.monotonic() - started,
        steps={"base": base_seconds, "build": time.monotonic() - build_started},
    )
    _log(f"built {tag} with {engine.name} on {python_image}: {size / 1e6:.0f} MB, in {result.seconds:.0f} s")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="goodmem-image", description=__doc__.splitlines()[0])
    p.add_argument("--tag", default=None, help="image tag (default goodmem-operator:<version>)")
    p.add_argument("--base", default="auto", help=f"{', '.join(BASE_CHOICES)} (the first is the default), or an image")
    p.add_argument("--refresh-base", action="store_true", help="make the Debian base again (newer packages)")
    args = p.parse_args(argv)
    try:
        build_image(args.tag, args.base, refresh_base=args.refresh_base)
    except EngineUnavailable as exc:
        print(f"make image: the image was NOT built: {exc}", file=sys.stderr)
        return 1
    except ImageBuildFailed as exc:
        print(f"make image: the build failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
