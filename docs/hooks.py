"""MkDocs hook: the measured results in bench/results/ become part of the site.

The pages link them as ``../bench/results/NAME`` so that the links also work where the Markdown is read in place
(a repository browser). This hook adds every file of bench/results/ to the site under ``bench/results/`` (copied as
it is; a ``.md`` there is served as text, not rendered, so its own links are not the site's) and rewrites those
links to it before MkDocs validates them, so ``mkdocs build --strict`` still fails on a link to a missing file.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
RESULTS = "bench/results"
LINK = re.compile(r"\]\((?:\.\./)+" + re.escape(RESULTS) + "/")


class _CopiedFile(File):
    """A file copied into the site as it is, Markdown included."""

    def is_documentation_page(self) -> bool:
        return False


def on_files(files: Files, config) -> Files:
    for path in sorted((ROOT / RESULTS).iterdir()):
        if path.is_file():
            files.append(_CopiedFile(f"{RESULTS}/{path.name}", str(ROOT), config["site_dir"],
                                     config["use_directory_urls"]))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    up = "../" * page.file.src_uri.count("/")
    return LINK.sub(f"]({up}{RESULTS}/", markdown)
