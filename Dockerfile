# stockwire: one image for central, processor, edge and migrate (the command is the first argument).
#   docker build -t stockwire .
#   docker run --rm stockwire --help
FROM node:20-bookworm-slim AS deps
WORKDIR /app
# better-sqlite3 (the edge outbox) compiles from source when no prebuilt binary fits the platform.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
# No dev tools, and no embedded PostgreSQL: a deployment sets DATABASE_URL.
RUN npm ci --omit=dev --omit=optional --no-audit --no-fund

FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    DATA_DIR=/data
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json tsconfig.json ./
COPY bin ./bin
COPY cli ./cli
COPY protocol ./protocol
COPY broker ./broker
COPY gateway ./gateway
COPY processors ./processors
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME ["/data"]
# edge: 1883 MQTT, 8083 MQTT/WebSocket, 9101 HTTP · central: 1884, 8084, 8080 · processor: 9102
EXPOSE 1883 8083 9101 1884 8084 8080 9102
ENTRYPOINT ["node", "bin/stockwire.js"]
CMD ["--help"]
