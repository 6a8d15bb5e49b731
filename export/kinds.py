"""What the export does differently for a decoder-only classifier, in one place (no torch here).

- Exits and the ``mahalanobis`` abstain score read an encoder's layers and its first token, so a
  decoder-only classifier is refused with either (:func:`check_kind_settings`).
- The bundle's tokenizer sections (:func:`tokenizer_settings`): ``tokenizer`` is the classifier's;
  beside a decoder-only classifier the embedder keeps its own tokenizer, shipped as
  ``embedder_tokenizer.json`` with its own section ``embedder_tokenizer``. Each section lists the
  inputs its graphs take, which is what the runtime feeds them.
"""

from __future__ import annotations

from lrsl_rt.manifest import TokenizerSettings

from .errors import ExportError


def check_kind_settings(ckpt, plan, abstain_score: str) -> None:
    """Refuse exits and the mahalanobis score for a decoder-only classifier, before any export."""
    if ckpt.classifier_kind != "decoder":
        return
    if plan:
        raise ExportError(
            f"{ckpt.root}: exits need an encoder classifier; this one is decoder-only (--no-exits)"
        )
    if abstain_score == "mahalanobis":
        raise ExportError(
            f"{ckpt.root}: the mahalanobis abstain score reads an encoder's first token; this classifier is "
            "decoder-only (choose another --abstain score)"
        )


def tokenizer_settings(
    ckpt, toks: dict, input_names: dict
) -> tuple[TokenizerSettings, TokenizerSettings | None]:
    """(the ``tokenizer`` section, the ``embedder_tokenizer`` section or None when both models share one).

    ``toks``: each role's HF tokenizer; ``input_names``: each role's graph inputs."""

    def section(role: str) -> TokenizerSettings:
        tok = toks[role]
        return TokenizerSettings(
            ckpt.info.max_length, int(tok.pad_token_id), str(tok.pad_token), input_names[role]
        )

    if ckpt.embedder_tokenizer_file is None:  # one tokenizer: both graphs take the same inputs (checked)
        return section("classifier"), None
    return section("classifier"), section("embedder")
