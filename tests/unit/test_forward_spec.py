"""logging.forward in the spec: its address and facility checked with file:line:col, the rules it
needs (an init, the gen-log logger), and what reaches the image (ENV, CMD's name in init.conf)."""

from __future__ import annotations

import pytest

from generator.model import build_image
from generator.plan.init_layer import init_env
from generator.schema import syslog_facility_code
from tests.unit.test_readiness_spec import _rendered
from tests.unit.test_spec import errors, load, only

SPEC = """\
name: shop
tags: ["1"]
base: {distro: debian, release: bookworm, bootstrap: {}}
init: {kind: s6}
logging:
  forward: {to: "tcp://logs.internal:601", facility: local4}
cmd: [app]
"""


def test_the_forwarding_reaches_the_model_and_the_image_env(tmp_path):
    image = build_image(load(tmp_path, shop=SPEC).specs["shop"])
    assert (image.logging.forward_to, image.logging.forward_facility) == ("tcp://logs.internal:601", "local4")
    env = init_env(image)
    assert env["GEN_LOG_FORWARD"] == "tcp://logs.internal:601" and env["GEN_LOG_FORWARD_FACILITY"] == "local4"


def test_without_forwarding_the_image_env_names_none(tmp_path):
    image = build_image(
        load(
            tmp_path, shop=SPEC.replace('  forward: {to: "tcp://logs.internal:601", facility: local4}\n', "  keep: 3\n")
        ).specs["shop"]
    )
    assert image.logging.forward_to == "" and "GEN_LOG_FORWARD" not in init_env(image)


def test_a_child_turns_its_parents_forwarding_off_with_an_empty_address(tmp_path):
    child = "name: kid\ntags: ['1']\nextends: shop\nlogging: {forward: {to: ''}}\n"
    project = load(tmp_path, shop=SPEC, kid=child)
    kid = build_image(project.specs["kid"])
    assert kid.logging.forward_to == "" and kid.logging.forward_facility == "local4"
    assert "GEN_LOG_FORWARD" not in init_env(kid)


def test_cmd_goes_by_the_images_name_in_init_conf(tmp_path):
    output = _rendered(tmp_path, SPEC.replace("name: shop", "name: app"))
    conf = (output / "app" / "gen-init" / "etc" / "gen" / "init.conf").read_text()
    assert "app_name=app\n" in conf


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("tcp://logs.internal:601", "logs.internal:601"), "'logs.internal:601' is not valid here"),
        (("tcp://logs.internal:601", "tcp://logs.internal:65536"), "is not valid here"),
        (("tcp://logs.internal:601", "unix://relative.sock"), "is not valid here"),
        (("tcp://logs.internal:601", "udp://[::1:514"), "is not valid here"),
        (("facility: local4", "facility: local8"), "'local8' is not one of"),
        (("init: {kind: s6}", "init: {kind: none}"), "log forwarding needs an init layer"),
        (("  forward:", "  logger: s6-log\n  forward:"), "log forwarding needs the gen-log logger"),
    ],
)
def test_forwarding_mistakes_are_spec_errors(tmp_path, edit, message):
    found = only(errors(tmp_path, shop=SPEC.replace(*edit)), message)
    assert found.line and found.column and "shop.yaml" in found.format()


@pytest.mark.parametrize(("name", "code"), [("kern", 0), ("user", 1), ("ftp", 11), ("local0", 16), ("local7", 23)])
def test_facility_codes_follow_rfc5424(name, code):
    assert syslog_facility_code(name) == code
