"""Hub upload of the bundled pretrained models.

* :func:`assemble` builds the exact folder that goes to the Hub (config, weights, eval.json, and the card with
  its pictures rendered by :func:`pdeblocks.cards.write_card`) in a folder of the caller's choice or a new
  temporary one — never inside the installed package, so ``pdeblocks publish`` works from a wheel;
* :func:`upload` sends it with ``HfApi.upload_folder`` and tags the commit with the model's revision in the
  bundled revisions map (:func:`hub_tag`, from :func:`pdeblocks.hub.bundled_revisions`), so
  ``from_pretrained(repo_id, revision=tag)`` finds it.

The cards and their pictures are rendered by :mod:`pdeblocks.cards`.
"""
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from .cards import FIGURES, write_card
from .hub import BUNDLED_DIR, CONFIG_NAME, WEIGHTS_NAME, bundled_revisions, list_pretrained, load_folder

__all__ = ['HUB_FILES', 'assemble', 'hub_tag', 'upload']

HUB_FILES = (CONFIG_NAME, WEIGHTS_NAME, 'eval.json', 'README.md') + FIGURES   # an assembled folder holds these


def assemble(name: str, out: Optional[str] = None) -> Path:
    """The exact Hub folder: config.json, model.safetensors, eval.json, README.md and pictures.

    ``out``: the folder to fill (created; if it exists it must be empty or a previous assembly, holding
    only :data:`HUB_FILES`, which are replaced); default a new temporary folder. The card and figures are
    rendered from the bundled eval.json (:func:`write_card`), so nothing is read from or written to a
    source checkout.
    """
    if name not in list_pretrained():
        raise ValueError(f"unknown model {name!r}; bundled models: {list_pretrained()}")
    load_folder(BUNDLED_DIR / name)  # refuse to publish anything that does not load strictly
    if out is None:
        folder = Path(tempfile.mkdtemp(prefix=f'pdeblocks-publish-{name}-'))
    else:
        folder = Path(out)
        foreign = sorted(p.name for p in folder.iterdir() if p.name not in HUB_FILES) if folder.is_dir() else []
        if foreign:
            raise ValueError(f"--out {folder} holds other files {foreign[:5]}; give an empty or new folder")
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"--out {folder} is a file; give an empty or new folder")
        folder.mkdir(parents=True, exist_ok=True)
    for f in (CONFIG_NAME, WEIGHTS_NAME, 'eval.json'):
        shutil.copy2(BUNDLED_DIR / name / f, folder / f)
    write_card(name, folder)
    return folder


def hub_tag(name: str, repo_id: str) -> Optional[str]:
    """The tag that the bundled revisions map gives ``name`` in ``repo_id`` (e.g. ``denoiser-1d`` → ``v2`` and
    ``denoiser-1d-piecewise-constant`` → ``v1`` in ``pdeblocks/denoiser-1d``), or None."""
    for other in list_pretrained():
        table = bundled_revisions(other)
        if table and table['repo_id'] == repo_id:
            tags = [tag for tag, target in table['revisions'].items() if target == name]
            return tags[0] if tags else None
    return None


def upload(folder: Path, repo_id: str, tag: Optional[str] = None) -> str:
    """``HfApi.upload_folder`` of an assembled folder, then the commit tagged ``tag`` (if given; an existing tag is
    never moved: the Hub refuses, and so does this)."""
    from huggingface_hub import HfApi
    if repo_id.count('/') != 1:
        raise ValueError(f"--repo-id must look like ORG/NAME, got {repo_id!r}")
    api = HfApi()
    api.create_repo(repo_id, repo_type='model', exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type='model',
                             commit_message=f'pdeblocks: publish {folder.name}')
    if tag is not None:
        api.create_tag(repo_id, tag=tag, revision=info.oid, repo_type='model',
                       tag_message=f'pdeblocks: {folder.name}')
    return str(getattr(info, 'commit_url', info))

