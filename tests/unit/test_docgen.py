"""Man pages and shell completion generated from the commands (oarcloud_cli.docgen):
every command is in them, the man page renders without a warning, and the
completion function completes commands, switches and the names it is given,
in bash and in zsh."""
import shutil
import subprocess

import pytest

from oarcloud_cli import docgen

# A stand-in for the lister the completion runs (the integration tier runs the real one).
NAMES = '''oarcloud() { case "$*" in
  "list -f value -c name") echo web-0 web-1 db ;;
  "net list -f value -c name") echo default back ;;
  "volume list -f value -c name") echo data logs ;;
  "image list -f value -c name") echo tiny bookworm ;;
esac; }
t() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=(); _oarcloud_complete
      echo "${COMPREPLY[*]}"; }
'''
CASES = [(["oarcloud", "vo"], "volume"),
         (["oarcloud", "volume", "attach", "d"], "data"),
         (["oarcloud", "volume", "attach", "data", "w"], "web-0 web-1"),
         (["oarcloud", "show", ""], "web-0 web-1 db"),
         (["oarcloud", "launch", "--network", "b"], "back"),
         (["oarcloud", "launch", "--image", "t"], "tiny"),
         (["oarcloud", "launch", "--js"], "--json"),
         (["oarcloud", "net", "rule", "delete", "b"], "back"),
         (["oarcloud", "exec", "web-0", "--", "l"], ""),
         (["oarcloud", "delete", "--wait", "w"], "web-0 web-1")]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("docgen")
    assert docgen.main(["--man", str(out), "--bash", str(out / "bash"),
                        "--zsh", str(out / "zsh")]) == 0
    return out


def test_every_command_is_in_its_man_page_which_renders_cleanly(generated):
    for prog, ref in docgen.PROGRAMS:
        page = generated / (prog + ".1")
        text = page.read_text()
        leaves = [c for c in docgen.commands(prog, docgen._app(ref)) if not c["subcommands"]]
        for c in leaves:
            assert '.SS "%s %s' % (prog, " ".join(c["path"])) in text, c["path"]
        res = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(page)],
                             capture_output=True, text=True)
        assert res.returncode == 0 and res.stderr == "", res.stderr[:500]
    assert "oarcloud volume attach NAME INSTANCE PATH" in \
        (generated / "oarcloud.1").read_text().replace("\\-", "-")


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_completes_commands_switches_and_names(generated, shell):
    if not shutil.which(shell):
        pytest.skip("%s is not installed (deps/debian-packages.txt has it)" % shell)
    script = generated / shell / ("oarcloud" if shell == "bash" else "_oarcloud")
    lines = "".join("t %s\n" % " ".join("'%s'" % w for w in words) for words, _ in CASES)
    res = subprocess.run([shell, "-c", "source %s 2>/dev/null\n%s%s" % (script, NAMES, lines)],
                         capture_output=True, text=True, timeout=60)
    assert res.stdout.splitlines() == [want for _, want in CASES], res.stdout + res.stderr


def test_a_second_run_changes_nothing(generated, capsys):
    capsys.readouterr()
    docgen.main(["--man", str(generated), "--bash", str(generated / "bash"),
                 "--zsh", str(generated / "zsh")])
    assert "everything up to date" in capsys.readouterr().out
