"""Advice names the -C and -f pixmake was run with, so that it runs as pasted where pixmake ran."""

from __future__ import annotations

from pixmake import invocation


def test_commands_carry_the_options_as_given_and_git_goes_to_the_projects_folder() -> None:
    with invocation.invoked("my brand", "sprites/icons.yaml"):
        assert (
            invocation.pixmake("accept", "logo tile")
            == "pixmake -C 'my brand' -f sprites/icons.yaml accept 'logo tile'"
        )
        assert invocation.git("checkout", "--", "pixmake.lock") == "git -C 'my brand/sprites' checkout -- pixmake.lock"
    with invocation.invoked(None, "other.yaml"):
        assert invocation.pixmake("plan") == "pixmake -f other.yaml plan"
        assert invocation.git("add", "pixmake.lock") == "git add pixmake.lock"  # the project is here
    assert invocation.pixmake("forget", "hero") == "pixmake forget hero"  # outside an invocation: bare
    assert invocation.git("mv", "-f", "a.png", "A.png") == "git mv -f a.png A.png"
