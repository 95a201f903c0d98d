"""Every engine is named once, in the catalog, and declares what a request to it may carry."""

from __future__ import annotations

import pytest

from service.engines.catalog import ENGINE_NAMES
from service.engines.registry import UnknownEngine, engine_class

CARRIES = {
    # name: (takes_reference, takes_hints, takes_render_size)
    "eccv16": (False, False, False),
    "siggraph17": (False, True, False),
    "exemplar": (True, False, False),
    "ddcolor": (False, False, True),
    "ddcolor-artistic": (False, False, True),
    "ddcolor-tiny": (False, False, True),
}


def test_the_catalog_lists_every_engine_once() -> None:
    assert sorted(ENGINE_NAMES) == sorted(CARRIES)
    assert len(set(ENGINE_NAMES)) == len(ENGINE_NAMES)


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_each_name_is_its_engines_own(name: str) -> None:
    assert engine_class(name).name == name


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_what_a_request_may_carry_is_known_before_an_engine_is_built(name: str) -> None:
    cls = engine_class(name)
    assert (cls.takes_reference, cls.takes_hints, cls.takes_render_size) == CARRIES[name]


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UnknownEngine, match=r"unknown model 'dalle'; choose from .*'ddcolor-tiny'"):
        engine_class("dalle")
