# The group server's image: the stock MLflow image lacks the PostgreSQL driver. Exact versions:
# MLflow the same major.minor as the clients (covidseg pins mlflow>=3.1,<4 and was tested with
# 3.17.2); basic-auth (Flask-WTF) for the login; psycopg 3; optuna + optuna-dashboard.
FROM python:3.11.7-slim-bookworm
RUN pip install --no-cache-dir "mlflow[auth]==3.17.2" "psycopg[binary]==3.3.9" "optuna==5.0.0" \
        "optuna-dashboard==0.21.0"
COPY docker/basic_auth.ini /etc/mlflow/basic_auth.ini
COPY docker/dashboard.sh /usr/local/bin/covidseg-dashboard
COPY docker/dashboard.py /usr/local/lib/covidseg/dashboard.py
EXPOSE 5000 8080
