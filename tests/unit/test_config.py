"""Settings from the environment."""

import pytest

from gateway.config import MiB, Settings, describe
from streaming.engine import UploadLimits, part_size_for


def test_defaults_and_overrides():
    settings = Settings.from_env({}, port=None)
    assert settings.port == 3000
    assert settings.storage_backend == "local"
    settings = Settings.from_env({"PORT": "8080", "PART_SIZE": "16MiB", "AUTH_REQUIRED": "false",
                                  "CORS_ORIGINS": "https://a.example, https://b.example"}, port=9000)
    assert settings.port == 9000
    assert settings.part_size == 16 * MiB
    assert settings.auth_required is False
    assert settings.cors_origins == ("https://a.example", "https://b.example")


@pytest.mark.parametrize("env", [{"PORT": "x"}, {"PART_SIZE": "1MiB"}, {"STORAGE_BACKEND": "ftp"},
                                 {"STORAGE_BACKEND": "s3"}, {"AUTH_REQUIRED": "maybe"}])
def test_bad_settings_name_the_variable(env):
    with pytest.raises(ValueError):
        Settings.from_env(env)


def test_every_option_is_described():
    text = describe()
    for _, option in Settings.options():
        assert option.env in text


def test_part_size_fits_ten_thousand_parts():
    limits = UploadLimits(max_size=200 * 1024**3, part_size=8 * MiB, window=2, expiration=60)
    assert part_size_for(1, limits) == 8 * MiB
    assert part_size_for(100 * 1024**3, limits) * 10_000 >= 100 * 1024**3
    assert part_size_for(100 * 1024**3, limits) % MiB == 0
    assert part_size_for(None, limits) * 10_000 >= 200 * 1024**3


def test_parts_in_flight_follow_the_store_unless_set():
    from gateway.config import parts_in_flight

    assert parts_in_flight(Settings.from_env({})) == 2
    assert parts_in_flight(Settings.from_env({"STORAGE_BACKEND": "s3", "S3_BUCKET": "media"})) == 3
    assert parts_in_flight(Settings.from_env({"PARTS_IN_FLIGHT_PER_UPLOAD": "5"})) == 5
    with pytest.raises(ValueError):
        Settings.from_env({"PARTS_IN_FLIGHT_PER_UPLOAD": "-1"})
    for env in ({"REQUEST_CHUNK_SIZE": "1KiB"}, {"PASSWORD_HASH_MEMORY": "1KiB"}, {"PASSWORD_HASH_TIME_COST": "0"}):
        with pytest.raises(ValueError):
            Settings.from_env(env)


def test_production_refuses_the_development_fallbacks():
    with pytest.raises(ValueError, match="MONGODB_URI"):
        Settings.from_env({"ENVIRONMENT": "production", "JWT_SECRET": "s" * 40})
    with pytest.raises(ValueError, match="JWT_SECRET"):
        Settings.from_env({"ENVIRONMENT": "production", "MONGODB_URI": "mongodb://db:27017"})
    settings = Settings.from_env({"ENVIRONMENT": "production", "MONGODB_URI_SSM_PARAMETER": "/ms/mongo",
                                  "JWT_SECRET_SSM_PARAMETER": "/ms/jwt"})
    assert settings.environment == "production"
    assert Settings.from_env({}).s3_sse == "", "the bucket's default encryption applies unless asked otherwise"
