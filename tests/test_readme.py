"""README.md: short enough to read in ten minutes, and every command it shows names flags its script has.

The commands are not run here (the demo alone takes 10 minutes); each one's flags are checked against its
(sub)command's own --help, so a renamed or removed flag fails this test before a reader meets it."""

import contextlib
import importlib
import io
import os
import re
import shlex

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(REPO, "README.md")).read()
MAX_WORDS = 1500


def readme_commands():
    """Each `python script.py ...` command of the README's bash blocks, as a token list (comments dropped)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.splitlines():
            for command in line.split("#")[0].split("&&"):
                tokens = shlex.split(command)
                if len(tokens) > 1 and tokens[0] == "python" and tokens[1].endswith(".py"):
                    commands.append(tokens[1:])
    return commands


def help_text(script, arguments):
    """What `python script --help` prints after the command's own words (its subcommand's help, if it has one)."""
    module = importlib.import_module(os.path.splitext(script)[0])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit) as exit_info:
        module.main([*arguments, "--help"])
    assert exit_info.value.code == 0, f"{script} {arguments}: --help exited {exit_info.value.code}"
    return printed.getvalue()


def test_the_readme_is_read_in_ten_minutes():
    assert len(README.split()) <= MAX_WORDS


@pytest.mark.parametrize("command", readme_commands(), ids=" ".join)
def test_every_flag_in_a_readme_command_is_one_its_script_knows(command):
    script, arguments = command[0], command[1:]
    assert os.path.isfile(os.path.join(REPO, script)), f"{script} is not in the repository"
    text = help_text(script, arguments)
    for flag in (token.split("=")[0] for token in arguments if token.startswith("--")):
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), f"{script}: {flag} is not in its --help"
