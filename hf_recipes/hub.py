"""The only module that talks to the Hugging Face Hub: secret checks, what is uploaded, and pushing a stage's folder.

    push_folder("outputs/gpt2-tiny/sft", "me/tiny-chat", private=True)   # card + one commit of what users need

The token comes from the caller, `HF_TOKEN`, or `hf auth login` (huggingface_hub.get_token()); it is never printed,
logged or written, and every file is checked for it before anything is uploaded.
"""

from __future__ import annotations

import fnmatch
import logging
from pathlib import Path

from hf_recipes.model_card import read_json, stage_of, write_model_card
from hf_recipes.run_folder import ADAPTER_FOLDER, NOT_VERIFIED_FILE, model_folder_kind, read_run_config
from hf_recipes.runtime import RecipeError

logger = logging.getLogger("hf_recipes")


# What a user needs to load, trust and reproduce a model; everything else (optimizer state, TensorBoard runs,
# pickles) stays home. Patterns match a file's path relative to the folder it is in.
MODEL_FILES = (
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "adapter_config.json",
)
RECORD_FILES = ("README.md", "metrics.json", "run_config.yaml", NOT_VERIFIED_FILE, "plots/*.png")
CHECKPOINT_FILES = (*MODEL_FILES, "trainer_state.json")
# Pickles run code when loaded (and training_args.bin holds the Hub token): never uploaded, whatever matches above.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


# ----------------------------------------------------------------------------------------------------------------
# Token and secrets
# ----------------------------------------------------------------------------------------------------------------


def resolve_token(token: str | None = None) -> str:
    """The token to push with: `token`, else HF_TOKEN, else the one `hf auth login` saved."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise RecipeError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write access)")
    return token


def files_containing(paths: list[Path], secret: str, chunk_size: int = 1 << 20) -> list[Path]:
    """The files among `paths` whose bytes contain `secret` (read in chunks, so large weights are fine)."""
    needle = secret.encode()
    found = []
    for path in paths:
        with open(path, "rb") as handle:
            tail = b""
            while chunk := handle.read(chunk_size):
                window = tail + chunk
                if needle in window:
                    found.append(path)
                    break
                # Keep the last len-1 bytes: a match may straddle chunks (even several, when chunks are short).
                tail = window[-(len(needle) - 1) :] if len(needle) > 1 else b""
    return found


def assert_no_secret(folder: Path | str, secret: str | None) -> None:
    """Raise RecipeError naming the files under `folder` that contain `secret` (never the secret itself)."""
    if not secret:
        return
    paths = sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.is_symlink())
    leaked = files_containing(paths, secret)
    if leaked:
        names = ", ".join(str(p.relative_to(folder)) for p in leaked)
        raise RecipeError(f"the Hub token is written in {names} under {folder}: delete it before sharing the folder")


# ----------------------------------------------------------------------------------------------------------------
# What gets uploaded
# ----------------------------------------------------------------------------------------------------------------


def _matches(relative: str, patterns: tuple[str, ...]) -> bool:
    # fnmatch's * crosses '/', so a pattern without a folder must match a file at the top of that folder only.
    return any(fnmatch.fnmatch(relative, p) and relative.count("/") == p.count("/") for p in patterns)


def files_to_upload(folder: Path | str, include_checkpoints: bool = False) -> list[str]:
    """Paths (relative, POSIX) of the files a user needs: weights, config, tokenizer, card, metrics, plots, recipe."""
    folder = Path(folder)
    chosen = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name.endswith(PICKLE_SUFFIXES):
            continue
        relative = path.relative_to(folder).as_posix()
        top, _, rest = relative.partition("/")
        wanted = (
            _matches(relative, MODEL_FILES + RECORD_FILES)
            or (top == ADAPTER_FOLDER and _matches(rest, MODEL_FILES))
            or (include_checkpoints and top.startswith("checkpoint-") and _matches(rest, CHECKPOINT_FILES))
        )
        if wanted:
            chosen.append(relative)
    return sorted(chosen)


# ----------------------------------------------------------------------------------------------------------------
# Push
# ----------------------------------------------------------------------------------------------------------------


def check_can_push(repo_id: str | None, token: str | None = None) -> str:
    """Refuse a push that cannot work (no repo id, offline, no token) early, e.g. before training; return the token."""
    from huggingface_hub import constants

    if not repo_id:
        raise RecipeError("pushing needs a repository id: --repo_id user/name (or hub_model_id in the recipe)")
    if constants.is_offline_mode():
        raise RecipeError("HF_HUB_OFFLINE=1 forbids pushing to the Hub: unset it to push")
    return resolve_token(token)


def check_can_write(repo_id: str | None, token: str | None = None) -> str:
    """`check_can_push`, then ask the Hub whose token it is: refuse a read-only token or another's namespace.

    A training run calls it before any weights load, so a push that cannot work fails in seconds, not after training.
    """
    import httpx2
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    token = check_can_push(repo_id, token)
    try:
        identity = HfApi(token=token).whoami()
    except HfHubHTTPError as error:
        status = getattr(error.response, "status_code", "?")
        raise RecipeError(f"the Hub refused the token ({status}): set HF_TOKEN to a valid write token") from None
    except (OSError, httpx2.HTTPError) as error:
        raise RecipeError(f"could not reach {constants.ENDPOINT} to check the token: {type(error).__name__}") from None
    role = identity.get("auth", {}).get("accessToken", {}).get("role")
    if role == "read":
        raise RecipeError(f"the Hub token is read-only: pushing to {repo_id} needs a token with write access")
    namespaces = {identity.get("name"), *(org.get("name") for org in identity.get("orgs", []))}
    namespace = repo_id.split("/")[0] if "/" in repo_id else identity.get("name")
    if namespace not in namespaces:
        raise RecipeError(
            f"cannot push to {repo_id}: the token belongs to {identity.get('name')}, who may write to "
            f"{', '.join(sorted(n for n in namespaces if n))} only"
        )
    return token


def push_folder(
    folder: Path | str,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    include_checkpoints: bool = False,
    commit_message: str | None = None,
    license: str = "mit",
    base_model: str | None = None,
    allow_not_verified: bool = False,
):
    """Write the card, create the repository (exist_ok) and upload what a user needs as ONE commit.

    Returns huggingface_hub's CommitInfo. A private push refuses a repository that already exists and is public.
    """
    import httpx2  # huggingface_hub 2.x's HTTP client (its connection errors are not OSErrors)
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(folder)
    model_folder_kind(folder)
    if (folder / NOT_VERIFIED_FILE).is_file() and not allow_not_verified:
        raise RecipeError(
            f"{folder} is a 4-bit export that failed verification ({NOT_VERIFIED_FILE}); "
            "pass --allow_not_verified true to publish it anyway (its card will say so)"
        )
    token = check_can_push(repo_id, token)

    write_model_card(folder, repo_id, license, base_model)
    files = files_to_upload(folder, include_checkpoints)
    leaked = files_containing([folder / f for f in files], token)
    if leaked:
        names = ", ".join(str(p.relative_to(folder)) for p in leaked)
        raise RecipeError(f"refusing to push: the Hub token is written in {names}")
    stage = stage_of(read_run_config(folder), read_json(folder / "config.json"))
    message = commit_message or f"Upload {stage} model from hf-recipes"

    api = HfApi(token=token)
    try:
        # private=None (not False) when not asked: an organization whose default is private keeps it.
        url = api.create_repo(repo_id, private=True if private else None, exist_ok=True)
        if private and api.repo_info(url.repo_id).private is False:
            raise RecipeError(f"{url.repo_id} already exists and is public; refusing a push asked to be private")
        operations = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(folder / f)) for f in files]
        info = api.create_commit(url.repo_id, operations=operations, commit_message=message)
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        hint = "; check HF_TOKEN or `hf auth login` (the token needs write access)" if status in (401, 403) else ""
        raise RecipeError(f"the Hub refused the push to {repo_id}: {str(error).splitlines()[0]}{hint}") from error
    except httpx2.TransportError as error:  # connection refused, timeouts, DNS: huggingface_hub's HTTP client
        raise RecipeError(f"could not reach {api.endpoint} to push {repo_id}: {error}") from error
    except ValueError as error:  # create_commit's own checks, e.g. README.md metadata the Hub calls invalid
        raise RecipeError(f"could not push to {repo_id}: {' '.join(str(error).split())}") from error
    size = sum((folder / f).stat().st_size for f in files)
    logger.info("Pushed %d files (%.2f MB) to %s in commit %s", len(files), size / 1e6, url, info.oid)
    return info
