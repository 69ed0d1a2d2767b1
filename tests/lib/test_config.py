"""Config: flag > SAGE_* environment > .sage/config.toml > default; bad input names key and file."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from sage.lib import config, project
from sage.lib.errors import ConfigError


def write_config(root: Path, text: str) -> Path:
    path = root / config.CONFIG_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file(tmp_path: Path) -> None:
    loaded = config.load(tmp_path, environ={})
    assert loaded == config.Config()
    assert loaded.source == "defaults"


def test_the_template_is_valid_and_all_defaults(tmp_path: Path) -> None:
    write_config(tmp_path, config.TEMPLATE)
    sections = {"stream": {}, "queue": {}, "tickets": {}, "worktree": {}, "hooks": {}}
    assert tomllib.loads(config.TEMPLATE) == sections
    for section, keys in config.SECTIONS.items():  # each key is shown, commented out
        shown = config.TEMPLATE.split(f"[{section}]\n", 1)[1].split("\n[", 1)[0]
        assert all(f"# {key} = " in shown for key in keys), section
    assert config.load(tmp_path, environ={}) == config.Config()


def test_flag_beats_environment_beats_file_beats_default(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        """
[stream]
workers = 3
timeout = 10
retries = 4
on_error = "fail"
worker = "claude -p '{context_file}'"
[queue]
backoff = 0.5
verify_batch = false
""",
    )
    env = {"SAGE_TIMEOUT": "20", "SAGE_RETRIES": "5", "SAGE_UNRELATED": "x", "HOME": "/h"}
    flags = {"retries": 6, "workers": None}  # None: the flag was not given
    loaded = config.load(tmp_path, environ=env, overrides=flags)
    assert loaded.workers == "3"  # file (the flag was None)
    assert loaded.timeout == 20.0  # environment beats file
    assert loaded.retries == 6  # flag beats environment
    assert loaded.on_error == "fail" and loaded.backoff == 0.5 and loaded.verify_batch is False
    assert loaded.worker == ("claude", "-p", "{context_file}")  # a string is split like a shell
    assert loaded.lock_timeout == config.Config().lock_timeout  # default
    assert str(tmp_path / config.CONFIG_PATH) in loaded.source


def test_the_process_environment_is_read_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGE_SCHEDULE", "batch")
    monkeypatch.setenv("SAGE_VERIFY", "make test")
    loaded = config.load(tmp_path)
    assert loaded.schedule == "batch" and loaded.verify == ("make", "test")


def test_list_values(tmp_path: Path) -> None:
    write_config(tmp_path, '[stream]\nworker = ["my agent", "{ticket_id}"]\n'
                           '[hooks]\nstrip_lines = ["^X-Bot:"]\n')  # fmt: skip
    loaded = config.load(tmp_path, environ={})
    assert loaded.worker == ("my agent", "{ticket_id}") and loaded.strip_lines == ("^X-Bot:",)


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("[stream]\nworkers = 0", "workers"),
        ('[stream]\nworkers = "lots"', "workers"),
        ("[stream]\ntimeout = -1", "timeout"),
        ('[stream]\ntimeout = "nan"', "timeout"),
        ("[stream]\nretries = 1.5", "retries"),
        ("[stream]\nretries = true", "retries"),
        ('[stream]\non_error = "explode"', "on_error"),
        ('[stream]\nschedule = "random"', "schedule"),
        ("[stream]\nworker = 5", "worker"),
        ("[stream]\ntarget_branch = true", "target_branch"),
        ('[queue]\nverify_batch = "maybe"', "verify_batch"),
        ("[queue]\nmax_attempts = -2", "max_attempts"),
        ("[hooks]\nstrip_lines = 3", "strip_lines"),
    ],
)
def test_a_bad_value_names_the_key_and_the_file(tmp_path: Path, body: str, key: str) -> None:
    path = write_config(tmp_path, body + "\n")
    with pytest.raises(ConfigError) as caught:
        config.load(tmp_path, environ={})
    assert str(path) in caught.value.message
    assert f"for {key}:" in caught.value.message


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("[stream]\nwrokers = 2\n", "'wrokers' in [stream]"),
        ("[queue]\nworkers = 2\n", "'workers' in [queue]"),
        ("[streams]\nworkers = 2\n", "[streams]"),
        ("stream = 3\n", "[stream] must be a table"),
        ("[stream\nworkers = 2\n", "invalid TOML"),
    ],
)
def test_an_unknown_key_or_broken_file_is_named(tmp_path: Path, body: str, named: str) -> None:
    path = write_config(tmp_path, body)
    with pytest.raises(ConfigError) as caught:
        config.load(tmp_path, environ={})
    assert str(path) in caught.value.message and named in caught.value.message


def test_a_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(tmp_path, environ={"SAGE_RETRIES": "many"})
    assert "SAGE_RETRIES" in caught.value.message and "for retries" in caught.value.message


def test_a_bad_flag_says_it_came_from_the_command_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"command line \(workers\).*for workers"):
        config.load(tmp_path, environ={}, overrides={"workers": "0"})


def test_the_project_resolves_the_index_from_config_and_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(tmp_path, '[stream]\nindex = "backlog/tickets.json"\n')
    found = project.open_project(tmp_path)
    assert found.index_path == tmp_path / "backlog" / "tickets.json"
    assert found.is_git is False and found.root == tmp_path.resolve()
    monkeypatch.chdir(tmp_path / ".sage")
    flagged = project.open_project(tmp_path, index="other.json")
    assert flagged.index_path == tmp_path / ".sage" / "other.json"  # relative to where you are
    assert project.open_project(tmp_path, index="/abs/i.json").index_path == Path("/abs/i.json")


def test_init_creates_the_layout_and_keeps_what_exists(tmp_path: Path) -> None:
    made = project.init(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in made) == [
        ".sage/config.toml",
        ".sage/tickets/index.json",
    ]
    (tmp_path / ".sage" / "config.toml").write_text("[stream]\nworkers = 2\n")
    assert project.init(tmp_path) == []
    assert config.load(tmp_path, environ={}).workers == "2"
    assert len(project.init(tmp_path, force=True)) == 2


@pytest.mark.parametrize(
    ("body", "hint"),
    [
        ("[stream]\nbackoff = 2\n", "backoff belongs in [queue]"),
        ("[queue]\nmax_attempt = 2\n", "did you mean max_attempts?"),
        ("[stream]\nwhatever = 2\n", "[stream] takes workers, worker"),
    ],
)
def test_an_unknown_key_says_where_it_belongs(tmp_path: Path, body: str, hint: str) -> None:
    write_config(tmp_path, body)
    with pytest.raises(ConfigError) as caught:
        config.load(tmp_path, environ={})
    assert hint in (caught.value.hint or "")


def test_the_template_shows_the_real_default_worker() -> None:
    line = next(x for x in config.TEMPLATE.splitlines() if x.startswith("# worker ="))
    assert line.startswith('# worker = ""') and config.Config().worker == ()


def test_id_pattern_is_a_checked_regular_expression(tmp_path: Path) -> None:
    write_config(tmp_path, "[tickets]\nid_pattern = 'T[0-9]+'\n")
    assert config.load(tmp_path, environ={}).id_pattern == "T[0-9]+"
    write_config(tmp_path, "[tickets]\nid_pattern = 'T[0-9'\n")
    with pytest.raises(ConfigError, match=r"id_pattern.*not a regular expression"):
        config.load(tmp_path, environ={})
