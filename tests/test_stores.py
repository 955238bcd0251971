"""A directory of store files over a shared base: what each store's configuration is, how
a broken store is reported without stopping the others, and what a reload would change."""

from __future__ import annotations

from pathlib import Path

import pytest

from crmsync.errors import ConfigError
from engine.resolve import load_config
from service.stores import diff, load_stores
from tests.stores_dir import StoresDir, make_stores_dir


@pytest.fixture
def site(tmp_path: Path) -> StoresDir:
    stores = make_stores_dir(tmp_path, "sqlite:///state.db")
    stores.add("acme", seed=1)
    stores.add("globex", seed=2)
    return stores


def test_each_store_is_its_file_over_the_base_with_its_names_qualified(site: StoresDir) -> None:
    stores = load_stores(site.directory)
    assert set(stores.configs) == {"acme", "globex"} and stores.broken == {}
    acme = stores.configs["acme"]
    assert acme.store == "acme" and acme.path == site.file("acme")
    assert list(acme.sources) == ["acme.shop"] and list(acme.destinations) == ["acme.out"]
    main = acme.pipelines["acme.main"]
    assert main.name == "acme.main"
    assert [s.name for s in main.sources] == ["acme.shop"]
    assert [d.name for d in main.destinations] == ["acme.out"]
    assert main.settings.sources == ["acme.shop"] and main.settings.destinations == ["acme.out"]
    # from the base: the schedule, the segment, the state database (beside the base)
    assert main.settings.schedule == "*/5 * * * *"
    assert "big_spender" in acme.settings.segments
    assert acme.state_url == f"sqlite:///{(site.directory / 'state.db').resolve()}"
    assert stores.configs["globex"].state_url == acme.state_url == stores.state_url
    assert list(stores.configs["globex"].pipelines) == ["globex.main"]


def test_a_store_s_own_value_wins_over_the_base_and_a_list_replaces_it(site: StoresDir) -> None:
    site.add("acme", extra='schedule = "0 3 * * *"\nsegments = ["big_spender"]\n')
    text = site.file("acme").read_text(encoding="utf-8")
    site.file("acme").write_text(text + '\n[defaults]\ntimezone = "Europe/Berlin"\n', "utf-8")
    config = load_config(site.directory, "acme")
    main = config.pipelines["acme.main"]
    assert main.settings.schedule == "0 3 * * *"
    assert main.settings.destinations == ["acme.out"]  # the base's, beside the store's keys
    assert config.settings.defaults.timezone == "Europe/Berlin"
    assert config.settings.defaults.currency == "TRY"  # the rest of [defaults] stays
    assert load_config(site.directory, "globex").settings.defaults.timezone == "Europe/Istanbul"


def test_a_broken_store_gives_its_issues_with_its_file_and_the_others_load(
    site: StoresDir,
) -> None:
    site.add("initech", seed=3, extra="lookback_minute = 5\n")  # a misspelt key
    site.file("umbrella").write_text("[sources.shop\nkind = 'files'\n", "utf-8")  # not TOML
    stores = load_stores(site.directory)
    assert set(stores.configs) == {"acme", "globex"}
    assert set(stores.broken) == {"initech", "umbrella"}
    (typo,) = stores.broken["initech"]
    assert typo.key == "pipelines.main.lookback_minute"
    line = next(
        n
        for n, text in enumerate(site.file("initech").read_text().splitlines(), 1)
        if text.startswith("lookback_minute")
    )
    assert typo.where == f"initech.toml:{line}" and "lookback_minutes" in typo.hint
    (syntax,) = stores.broken["umbrella"]
    assert "umbrella.toml is not valid TOML" in syntax.message
    assert not stores.entries["umbrella"].ok and stores.entries["umbrella"].path.name == (
        "umbrella.toml"
    )


def test_an_issue_in_a_value_from_the_base_points_at_the_base(tmp_path: Path) -> None:
    site = make_stores_dir(tmp_path, "sqlite:///state.db", base_extra="max_attempts = 0\n")
    site.add("acme")
    with pytest.raises(ConfigError) as caught:
        load_config(site.directory, "acme")
    (issue,) = caught.value.issues
    base = (site.directory / "_base.toml").read_text().splitlines()
    line = base.index("max_attempts = 0") + 1
    assert issue.key == "pipelines.main.max_attempts" and issue.where == f"_base.toml:{line}"


@pytest.mark.parametrize(
    ("section", "line"),
    [("state", 'url = "sqlite:///other.db"'), ("celery", 'queue = "acme-only"')],
)
def test_a_store_may_not_set_what_every_store_shares(
    site: StoresDir, section: str, line: str
) -> None:
    """The state database and the workers' broker and queue belong to the process: a
    worker serves every store of the directory from the base's ``[celery]``."""
    path = site.file("acme")
    text = path.read_text(encoding="utf-8")
    path.write_text(f"[{section}]\n{line}\n" + text, "utf-8")
    (issue,) = load_stores(site.directory).broken["acme"]
    assert issue.key == section and "_base.toml" in issue.hint and issue.where == "acme.toml:1"


def test_a_file_whose_name_is_no_store_name_is_a_broken_store(site: StoresDir) -> None:
    (site.directory / "Big Shop.toml").write_text(site.file("acme").read_text(), "utf-8")
    stores = load_stores(site.directory)
    (issue,) = stores.broken["Big Shop"]
    assert "not a store name" in issue.message and "rename" in issue.hint
    assert issue.where == "Big Shop.toml"
    assert set(stores.configs) == {"acme", "globex"}


def test_hidden_files_and_the_base_are_not_stores(site: StoresDir) -> None:
    (site.directory / ".#acme.toml").write_text("garbage [", "utf-8")  # an editor's lock
    (site.directory / "notes.txt").write_text("not a store", "utf-8")
    assert list(load_stores(site.directory).entries) == ["acme", "globex"]


def test_a_single_file_is_one_store_named_empty_with_its_own_names(tmp_path: Path) -> None:
    site = make_stores_dir(tmp_path, "sqlite:///state.db")
    site.add("acme", extra='destinations = ["out"]\n')
    single = tmp_path / "crmsync.toml"
    base = (site.directory / "_base.toml").read_text()
    shared = base.split("[pipelines.main]")[0]
    single.write_text(shared + site.file("acme").read_text(), "utf-8")
    stores = load_stores(single)
    assert stores.broken == {}
    assert list(stores.entries) == [""]
    config = stores.configs[""]
    assert config.store == "" and list(config.pipelines) == ["main"]
    assert list(config.sources) == ["shop"]


def test_load_config_of_a_directory_needs_a_store_and_names_them(site: StoresDir) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(site.directory)
    assert "acme, globex" in caught.value.issues[0].hint
    with pytest.raises(ConfigError) as caught:
        load_config(site.directory, "nope")
    assert "no store 'nope'" in caught.value.issues[0].message
    with pytest.raises(ConfigError) as caught:
        load_config(site.file("acme"), "acme")
    assert caught.value.issues[0].key == "--store"


def test_a_directory_without_store_files_is_an_error(tmp_path: Path) -> None:
    site = make_stores_dir(tmp_path, "sqlite:///state.db")
    with pytest.raises(ConfigError, match="holds no store file"):
        load_stores(site.directory)


def test_a_name_too_long_for_the_state_database_once_qualified_is_an_issue(
    site: StoresDir,
) -> None:
    long = "s" * 60
    path = site.file("acme")
    path.write_text(path.read_text().replace("shop", long), "utf-8")
    issues = load_stores(site.directory).broken["acme"]
    assert [i.key for i in issues] == [f"sources.{long}"]
    assert "longer than 64" in issues[0].message


def test_two_stores_with_the_same_local_names_never_share_a_qualified_name(
    site: StoresDir,
) -> None:
    configs = load_stores(site.directory).configs
    names = [set(c.sources) | set(c.destinations) | set(c.pipelines) for c in configs.values()]
    assert names[0].isdisjoint(names[1])


# --- what a reload changes ---------------------------------------------------------------


def test_diff_sorts_every_store_into_one_group(site: StoresDir) -> None:
    site.add("initech", seed=3)
    site.add("umbrella", seed=4)
    old = load_stores(site.directory)
    assert diff(old, old).quiet and diff(old, old).unchanged == (
        "acme",
        "globex",
        "initech",
        "umbrella",
    )

    site.add("acme", extra='schedule = "0 4 * * *"\n')  # changed
    site.file("globex").unlink()  # removed
    site.add("hooli", seed=5)  # added
    site.add("umbrella", extra="oops = 1\n")  # broken
    new = load_stores(site.directory)
    change = diff(old, new)
    assert change.added == ("hooli",)
    assert change.changed == ("acme",)
    assert change.removed == ("globex",)
    assert change.broken == ("umbrella",)
    assert change.unchanged == ("initech",)
    assert not change.quiet

    site.add("umbrella")  # fixed: it loads again, with other content than when broken
    fixed = diff(new, load_stores(site.directory))
    assert fixed.changed == ("umbrella",) and fixed.broken == ()


def test_a_change_to_the_base_changes_every_store(site: StoresDir) -> None:
    old = load_stores(site.directory)
    base = site.directory / "_base.toml"
    base.write_text(base.read_text().replace("*/5 * * * *", "*/10 * * * *"), "utf-8")
    new = load_stores(site.directory)
    assert diff(old, new).changed == ("acme", "globex")
    assert new.configs["acme"].pipelines["acme.main"].settings.schedule == "*/10 * * * *"


def test_a_change_to_a_store_s_mapping_file_changes_that_store(site: StoresDir) -> None:
    mapping = site.directory / "mappings" / "acme.toml"  # not beside the stores' files
    mapping.parent.mkdir()
    shipped = Path(__file__).resolve().parents[1] / "connectors" / "outbox" / "mapping.toml"
    mapping.write_text(shipped.read_text(encoding="utf-8"), "utf-8")
    path = site.file("acme")
    path.write_text(
        path.read_text() + '\n[destinations.out]\nmapping = "mappings/acme.toml"\n', "utf-8"
    )
    old = load_stores(site.directory)
    assert old.broken == {}
    mapping.write_text(mapping.read_text() + "\n# touched\n", "utf-8")
    assert diff(old, load_stores(site.directory)).changed == ("acme",)


def test_a_store_broken_before_and_after_stays_broken_not_changed(site: StoresDir) -> None:
    site.add("acme", extra="oops = 1\n")
    old = load_stores(site.directory)
    again = diff(old, load_stores(site.directory))
    assert again.broken == ("acme",) and again.unchanged == ("globex",)
