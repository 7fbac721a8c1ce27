"""The one family of errors the library raises. The CLI maps them to exit codes in one place."""

from __future__ import annotations


class RegistryError(Exception):
    """Something the user can fix: the message says what was wrong and what to do. CLI exit 1."""

    exit_code = 1


class NotARegistry(RegistryError):
    """The path is not a git repository, or not one made by `dspyreg init`."""


class InvalidName(RegistryError):
    """A program, version or environment name that dspyreg does not accept."""


class UnknownRef(RegistryError):
    """A ref (version, environment, commit) that the registry does not hold."""


class BadState(RegistryError):
    """A DSPy state file or program that cannot be published: pickle, malformed JSON, mismatch..."""


class BadProgramSpec(RegistryError):
    """A program spec that does not import or is not a dspy.Module."""


class DuplicateVersion(RegistryError):
    """Versions are immutable: this one is already published."""


class GateRefused(RegistryError):
    """A promotion that registry.toml's gates refuse (the numbers say why)."""


class NothingToRollBack(RegistryError):
    """The journal holds no earlier version for the environment."""


class GitError(RegistryError):
    """A git command failed: carries the command, its exit code and its stderr."""

    def __init__(self, command: list[str], returncode: int, stderr: str) -> None:
        self.command = command
        self.returncode = returncode
        self.stderr = stderr.strip()
        detail = self.stderr.splitlines()[-1] if self.stderr else "no output"
        super().__init__(f"git {' '.join(command)} failed (exit {returncode}): {detail}")


class ConflictError(RegistryError):
    """A concurrent writer moved a ref first; nothing of ours was written. CLI exit 3."""

    exit_code = 3


class UnsafeTree(RegistryError):
    """A bundle tree holding an entry that would be written outside its folder, or that is not a plain file or
    folder (`..`, `.git`, absolute names, symlinks, submodules...): a forged version, refused before any write."""

    def __init__(self, where: str, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{where}: tree entry '{path}' is not allowed ({reason})")


class ForgedTag(RegistryError):
    """A version tag that does not point at that version's publish commit on main (moved or made by hand)."""


class LockedRef(RegistryError):
    """A git lock file blocks a ref: left by a crashed git, or held too long by a running one. CLI exit 1: a lock is
    not another writer's move, and re-running does not help until it is gone."""


class CorruptRecord(RegistryError):
    """A record or bundle file dspyreg reads back from git (journal, quality record, prompts.json...) is not in the
    shape dspyreg writes: someone committed it by hand."""


class BadFieldNumbers(CorruptRecord):
    """A version's field-numbers.json (its gRPC field numbers, fixed at publish) is not a table dspyreg writes:
    malformed, a number protobuf does not accept, or a number given twice in one message."""


class RuntimeDrift(RegistryError):
    """The installed DSPy (or LiteLLM) differs from the version a bundle was published or saved with by more than
    registry.toml's [runtime] policy allows; the message names both versions."""


class RemoteUnreachable(RegistryError):
    """A remote registry could not be reached (git host down, network cut): `detail` is git's last line. Loads and
    servers may then fall back to the last version they verified (last_good.py)."""

    def __init__(self, message: str, detail: str) -> None:
        self.detail = detail
        super().__init__(message)


class RegistryUnreachableWarning(UserWarning):
    """`load` used the last version it verified because the remote registry could not be reached."""
