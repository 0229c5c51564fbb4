// Loads routemesh's .proto files at run time, so there is no generated JavaScript to keep in sync.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';

const here = path.dirname(fileURLToPath(import.meta.url));

/** The repository's protos/ directory; ROUTEMESH_PROTO_DIR overrides it when this client lives elsewhere. */
export const DEFAULT_PROTO_DIR = process.env.ROUTEMESH_PROTO_DIR || path.resolve(here, '../../../protos');

// google/rpc is vendored (see protos/README.md) because routemesh's protos do not import it:
// it is only needed to decode the grpc-status-details-bin trailer.
const GOOGLE_RPC_DIR = path.resolve(here, '../protos');

// camelCase fields as JavaScript expects; enums as their names, so they read well in logs and tests;
// int64 as Number (token counts and versions stay far below 2^53); defaults so every field is present;
// oneofs so each event names its kind (`event: "delta"`).
export const LOADER_OPTIONS = Object.freeze({
  keepCase: false, longs: Number, enums: String, defaults: true, oneofs: true,
});

const routerCache = new Map();

/**
 * The RouterService client constructor, loaded from `protoDir/routemesh/v1/router.proto`.
 * @param {string} [protoDir]
 * @returns {typeof grpc.Client}
 */
export function loadRouterService(protoDir = DEFAULT_PROTO_DIR) {
  if (!routerCache.has(protoDir)) {
    const file = path.join(protoDir, 'routemesh/v1/router.proto');
    if (!existsSync(file)) {
      throw new Error(`routemesh protos not found at ${file}: pass protoDir or set ROUTEMESH_PROTO_DIR`);
    }
    const definition = protoLoader.loadSync('routemesh/v1/router.proto', { ...LOADER_OPTIONS, includeDirs: [protoDir] });
    const loaded = /** @type {any} */ (grpc.loadPackageDefinition(definition));
    routerCache.set(protoDir, loaded.routemesh.v1.RouterService);
  }
  return routerCache.get(protoDir);
}

/** @type {protobuf.Root | undefined} */
let googleRpc;

/**
 * google.rpc.Status and the error detail types (google/protobuf/* come bundled with protobufjs).
 * @returns {protobuf.Root}
 */
export function googleRpcTypes() {
  if (!googleRpc) {
    const root = new protobuf.Root();
    root.resolvePath = (_origin, target) => path.join(GOOGLE_RPC_DIR, target);
    root.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto']);
    googleRpc = root;
  }
  return googleRpc;
}
