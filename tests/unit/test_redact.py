"""Credentials never reach a logged value (issue 14): the redaction itself."""

import logging

from covidseg.base.redact import RedactingFilter, redact
from covidseg.config import TuneConfig


def test_urls_and_key_values_lose_their_secrets():
    cases = {
        "postgresql://alice:hunter2@db.lab:5432/optuna": "postgresql://alice:***@db.lab:5432/optuna",
        "postgresql+psycopg://bob:p%40ss@10.0.0.5/studies": "postgresql+psycopg://bob:***@10.0.0.5/studies",
        "storage postgresql://u:p@h/db failed": "storage postgresql://u:***@h/db failed",
        "https://u:tok@host/x?token=abc&y=1": "https://u:***@host/x?token=***&y=1",
        "host=db password=hunter2 user=x": "host=db password=*** user=x",
        # issue 25: a token as a web URL's user, JSON, quoted values, api keys, YAML
        "https://ghp_T0k3n@github.com/lab/repo.git": "https://***@github.com/lab/repo.git",
        '{"user": "bob", "password": "hun ter2"}': '{"user": "bob", "password": "***"}',
        "password='two words' done": "password='***' done",
        'conn(password = "a\\"b", x=1)': 'conn(password = "***", x=1)',
        "api_key=abc123&page=2": "api_key=***&page=2",
        "MLFLOW_TRACKING_TOKEN=abc": "MLFLOW_TRACKING_TOKEN=***",
        "client_secret: s3cr3t\nlr: 0.1": "client_secret: ***\nlr: 0.1",
        "{'Api-Key': 'k'}": "{'Api-Key': '***'}",
        "PGPASSWORD=abc DBPASSWORD=d mytoken=e": "PGPASSWORD=*** DBPASSWORD=*** mytoken=***",
    }
    for raw, clean in cases.items():
        assert redact(raw) == clean
    # an unclosed quote after many escapes: linear, not exponential (this hung the old pattern)
    cut = '{"token": "' + "\\n" * 40
    assert redact(cut) == cut
    for untouched in ("postgresql://alice@db/optuna", "sqlite:////tmp/s.db", "http://h:5000/#/x",
                      "lr=0.001", "runs:/0123/model", "n_tokens=5", "tokens: 5",
                      "secretary: x", "time: 12:30", "password_file=/run/secrets/pg", 3.5, None):
        assert redact(untouched) == untouched


def test_parameters_and_log_lines_are_redacted(caplog):
    params = TuneConfig(storage="postgresql://alice:hunter2@db/optuna").to_params()
    assert params["storage"] == "postgresql://alice:***@db/optuna"
    logger = logging.getLogger("covidseg.test_redact")
    handler = logging.StreamHandler()
    handler.addFilter(RedactingFilter())
    record = logger.makeRecord(logger.name, logging.WARNING, __file__, 1,
                               "cannot open %s", ("postgresql://alice:hunter2@db/optuna",), None)
    handler.filter(record)
    assert record.getMessage() == "cannot open postgresql://alice:***@db/optuna"
