# The project image: used by the mlflow, dashboard and worker services of docker-compose.yml.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY conf ./conf
COPY sweeper ./sweeper
COPY deploy ./deploy
RUN pip install . optuna-dashboard \
 && useradd --create-home sweeper && mkdir -p /mlartifacts && chown sweeper /mlartifacts
USER sweeper
