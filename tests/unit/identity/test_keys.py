from portcullis.identity.keys import (
    MAX_KEY_LENGTH,
    Environment,
    checksum,
    display_prefix,
    generate_key,
    parse_key,
    redact_keys,
)


def test_generated_keys_parse_back_with_their_id_and_environment() -> None:
    for env in Environment:
        key_id, key = generate_key(env)
        parsed = parse_key(key)
        assert parsed is not None
        assert parsed.id == key_id
        assert parsed.environment is env
        assert key.startswith(display_prefix(env, key_id) + "_")
        assert len(key) <= MAX_KEY_LENGTH


def test_production_keys_are_marked_live() -> None:
    assert generate_key(Environment.production)[1].startswith("pc_live_")


def test_one_changed_character_fails_the_checksum() -> None:
    _, key = generate_key(Environment.production)
    i = len(key) - 10
    flipped = key[:i] + ("A" if key[i] != "A" else "B") + key[i + 1 :]
    assert parse_key(flipped) is None


def test_text_that_is_not_a_key_is_rejected() -> None:
    for text in ("", "Bearer x", "pc_live_short", "x" * 500, "pc_prod_" + "a" * 41):
        assert parse_key(text) is None


def test_checksum_is_six_base62_characters() -> None:
    assert len(checksum("pc_live_abc")) == 6
    assert checksum("a") != checksum("b")


def test_secrets_differ_between_keys() -> None:
    keys = {generate_key(Environment.development, "SAMEIDSAMEID")[1] for _ in range(50)}
    assert len(keys) == 50


def test_redact_keys_hides_the_secret_of_every_whole_key_and_keeps_the_prefix() -> None:
    _, key = generate_key(Environment.production)
    _, other = generate_key(Environment.staging)
    prefix = key[: len("pc_live_") + 12]
    text = f"/admin/v1/keys/{key}/suspend?and={other}"
    redacted = redact_keys(text)
    assert key not in redacted
    assert other not in redacted
    assert redacted.startswith(f"/admin/v1/keys/{prefix}_[redacted]/suspend?and=pc_stg_")
    # A display prefix or an id is not a secret and stays as it is.
    assert redact_keys(f"/admin/v1/keys/{prefix}") == f"/admin/v1/keys/{prefix}"
