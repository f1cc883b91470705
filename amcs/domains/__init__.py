"""Problem domains: where problems come from when they are generated rather than read, and the
exact truth of their steps.

A domain (:class:`Domain`) is registered by name in :data:`DOMAINS`; every command then knows
it with no other change:

- ``--problems NAME``, ``NAME:N`` for each of its ``sources`` (``amcs.problems.load_problems``);
- ``amcs eval steps --data NAME:N`` samples solutions and labels them with its step truth;
- ``--prm NAME-oracle`` / ``--judge NAME-oracle`` score steps with that truth
  (:class:`amcs.verification.DomainOracleScorer`);
- ``amcs view`` shows the exact truth next to the labels of the problems it owns.

The bundled domain is ``arith`` (:mod:`amcs.domains.arith`). A domain defined elsewhere is
registered with :func:`register_domain` by the code that defines it: a script or test calls it
before it runs a command in process (``typer.testing.CliRunner``); for a command started as a
program, name the defining module or file in ``AMCS_PLUGINS`` or an ``amcs.plugins`` entry point
(:mod:`amcs.registry`), e.g. ``AMCS_PLUGINS=tests/domains/counting.py amcs generate
--problems counting:5``.
"""

from __future__ import annotations

import re

from amcs.domains.base import Domain, StepCheck
from amcs.registry import Registry

ORACLE_SUFFIX = "-oracle"
_COUNT_RE = re.compile(r"^\d+$")

DOMAINS: Registry[Domain] = Registry("domain")


def register_domain(domain: Domain, *, replace: bool = False) -> Domain:
    """Register ``domain`` under its name; its source names must not be another domain's."""
    if not isinstance(domain, Domain):
        raise TypeError(
            f"{domain!r} is not a Domain (amcs.domains.base.Domain lists what it needs)"
        )
    for source in domain.sources:
        other = next((d for d in DOMAINS.registered().values() if source in d.sources), None)
        if other is not None and other.name != domain.name:
            raise ValueError(f"problem source {source!r} is taken by the {other.name} domain")
    return DOMAINS.register(domain.name, domain, replace=replace)


def _source_owner(source: str) -> Domain | None:
    return next((d for d in DOMAINS.values() if source in d.sources), None)


def source_domain(spec: object) -> Domain | None:
    """The domain whose source ``spec`` names (``arith``, ``arith:50``, even a malformed
    ``arith:x``), else None."""
    return _source_owner(str(spec).partition(":")[0])


def parse_source(spec: object) -> tuple[Domain, str, int] | None:
    """(domain, source name, count) for ``NAME`` or ``NAME:N``; None for a spec that names no
    domain; ValueError for a domain's name with a count that is not a whole number."""
    name, sep, count = str(spec).partition(":")
    domain = _source_owner(name)
    if domain is None:
        return None
    if not sep:
        return domain, name, domain.default_count
    if not _COUNT_RE.match(count):
        first, *_ = domain.sources
        forms = [first] + [f"{s}:N" for s in domain.sources]
        raise ValueError(
            f"bad problem source {str(spec)!r}: the {domain.name} domain is "
            f"{', '.join(forms[:-1])} or {forms[-1]} with N a whole number"
        )
    return domain, name, int(count)


def is_domain_source(spec: object) -> bool:
    """Whether ``spec`` is a well-formed source of a registered domain (``arith``, ``arith:N``)."""
    try:
        return parse_source(spec) is not None
    except ValueError:
        return False


def question_domain(question: str) -> Domain | None:
    """The registered domain with step truth that owns ``question``, else None."""
    return next((d for d in DOMAINS.values() if d.has_step_truth and d.owns(question)), None)


def oracle_name(domain: Domain) -> str:
    """The scorer name of a domain's step truth: ``arith-oracle``."""
    return domain.name + ORACLE_SUFFIX


def oracle_domain(scorer: str | None) -> Domain | None:
    """The domain whose oracle ``scorer`` names (``arith-oracle`` -> arith), else None."""
    if not scorer or not scorer.endswith(ORACLE_SUFFIX):
        return None
    domain = DOMAINS.get(scorer[: -len(ORACLE_SUFFIX)])
    return domain if domain is not None and domain.has_step_truth else None


def _register_bundled() -> None:
    from amcs.domains.arith import ARITH

    register_domain(ARITH)


_register_bundled()

__all__ = [
    "DOMAINS",
    "Domain",
    "StepCheck",
    "is_domain_source",
    "oracle_domain",
    "oracle_name",
    "parse_source",
    "question_domain",
    "register_domain",
    "source_domain",
]
