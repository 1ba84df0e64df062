# The stock MLflow image lacks the PostgreSQL driver: MLflow + psycopg 3 (+ optuna-dashboard).
FROM python:3.11-slim
RUN pip install --no-cache-dir "mlflow>=3.1,<4" "psycopg[binary]>=3.1" "optuna>=4" optuna-dashboard
EXPOSE 5000
