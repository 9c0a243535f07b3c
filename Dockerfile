# stockwire: one image for central, processor, edge and migrate (the command is the first argument).
#   docker build -t stockwire .
#   docker run --rm stockwire --help
FROM node:20-bookworm-slim AS build
WORKDIR /app
# better-sqlite3 (the edge outbox) compiles from source when no prebuilt binary fits the platform.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY bin ./bin
COPY runtime ./runtime
COPY cli ./cli
COPY protocol ./protocol
COPY broker ./broker
COPY gateway ./gateway
COPY processors ./processors
COPY device-sim ./device-sim
COPY dashboards/display ./dashboards/display
# npm ci compiles the runtime into dist/ (the prepare script); then the dev tools and the embedded
# PostgreSQL go (a deployment sets DATABASE_URL).
RUN npm ci --no-audit --no-fund && npm prune --omit=dev --omit=optional --no-audit --no-fund

FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    DATA_DIR=/data
WORKDIR /app
COPY --from=build /app ./
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME ["/data"]
# edge: 1883 MQTT, 8083 MQTT/WebSocket, 9101 HTTP · central: 1884, 8084, 8080 · processor: 9102
EXPOSE 1883 8083 9101 1884 8084 8080 9102
# the launcher runs the compiled dist/ with its memory settings
ENTRYPOINT ["bin/stockwire"]
CMD ["--help"]
