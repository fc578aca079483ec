// A minimal @tus/server for bench/peers.py: the reference tus server to compare the gateway with.
//
// Usage: node server.mjs <s3|file>
//
// Environment:
//   HOST (127.0.0.1), PORT (1080)                  where to listen; tus endpoint is /files/
//   PART_SIZE (8388608)                            S3 part size in bytes (s3 store)
//   S3_ENDPOINT, S3_BUCKET, AWS_REGION (eu-west-2) S3 server (path-style), bucket (s3 store)
//   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY       credentials (s3 store)
//   DATA_DIR                                       folder of uploads (file store)
// @tus/s3-store stages every part in a file under os.tmpdir(): set TMPDIR to keep them elsewhere.

import { Server } from "@tus/server";

const kind = process.argv[2] ?? process.env.PEER_STORE ?? "file";
const host = process.env.HOST ?? "127.0.0.1";
const port = Number(process.env.PORT ?? 1080);

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`server.mjs: ${name} is required for the ${kind} store`);
    process.exit(2);
  }
  return value;
}

async function makeStore() {
  if (kind === "s3") {
    const { S3Store } = await import("@tus/s3-store");
    return new S3Store({
      partSize: Number(process.env.PART_SIZE ?? 8 * 1024 * 1024),
      s3ClientConfig: {
        bucket: required("S3_BUCKET"),
        region: process.env.AWS_REGION ?? "eu-west-2",
        endpoint: required("S3_ENDPOINT"),
        forcePathStyle: true,
        credentials: {
          accessKeyId: required("AWS_ACCESS_KEY_ID"),
          secretAccessKey: required("AWS_SECRET_ACCESS_KEY"),
        },
      },
    });
  }
  if (kind === "file") {
    const { FileStore } = await import("@tus/file-store");
    return new FileStore({ directory: required("DATA_DIR") });
  }
  console.error(`server.mjs: unknown store ${JSON.stringify(kind)} (s3 or file)`);
  process.exit(2);
}

const server = new Server({ path: "/files", datastore: await makeStore() });
const listener = server.listen({ host, port }, () => {
  console.log(`@tus/server (${kind} store) listening on http://${host}:${port}/files pid ${process.pid}`);
});

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    listener.close(() => process.exit(0));
    listener.closeAllConnections?.();
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
