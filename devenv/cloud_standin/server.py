"""A local stand-in of the OpenStack APIs the bake uses: Keystone v3, Nova v2.1, Glance v2, Neutron v2.0.

One HTTP server on 127.0.0.1:PORT; services under /identity, /compute, /image, /network, listed
in the token's catalog. It answers the requests openstacksdk sends, in the shapes of the API
references (status codes, bodies, headers such as X-Subject-Token, OpenStack-API-Version,
Location), for what the bake does:

- Keystone: version discovery, POST /v3/auth/tokens (password), token + catalog.
- Nova (microversions 2.1-2.96): flavors, os-keypairs, servers create/show/list/delete,
  actions os-getConsoleOutput, os-stop, createImage (2.45+: body {"image_id"}; before: Location).
- Glance: images list (filters name, status, visibility), show, PATCH (json-patch), DELETE.
  A createImage snapshot goes queued -> saving -> active (or `killed` when a fault says so).
- Neutron: networks, ports (one per server), security groups and rules (409 while a port uses
  the group), floating IPs (create with port_id, update, delete).
- Heat (only when given `orchestration=`, a keystoneauth Adapter on a real Heat such as the
  local control plane's): the catalog lists /orchestration/v1/<project>, and every request under
  it goes to that Heat as it came (method, path, query, body) with the Adapter's own token; Heat's
  answer comes back unchanged. So `prune-templates` reads real stacks through the stand-in's token.

A server is backed by a factory (by default a real builder host, devenv.builder.host) started
with the key pair's public key and the stand-in's SSH port; its console output is the host's
cloud-init log with its real SSH host keys; its address is 127.0.0.1 (fixed, or floating when
the fixed one is set elsewhere) and the bake reaches sshd on `ssh_port` (`--ssh-port`).

Faults: `standin.faults` is a set of names; each makes one step fail the way a cloud does:
  keypair.create, secgroup.create, secgroup_rule.create, server.create (500s), server.error
  (the server goes to ERROR), console.nokey (cloud-init never prints keys), fip.create,
  server.stop, server.create_image (500), image.killed (the snapshot ends `killed`),
  image.stuck (the snapshot stays `saving`), stack.forbidden (Heat's 403 on reading one stack;
  the list still answers).
What it does not cover: volumes, quotas, pagination beyond one page, policy (any valid token is
admin of its one project), real disk snapshots (the image record has no data).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from devenv.procs import free_port

NOVA_MIN, NOVA_MAX = (2, 1), (2, 96)
PROJECT_ID = "5e4c8ab5b0d44e1d8a9e4dbbd8f1c0a1"
USER_ID = "0f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class HTTPError(Exception):
    def __init__(self, status: int, message: str, kind: str = "error"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


class CloudState:
    """Everything the stand-in cloud holds, behind one lock."""

    def __init__(
        self,
        server_factory,
        fixed_ip: str = "127.0.0.1",
        floating_ip: str = "127.0.0.1",
        ssh_port: int = 0,
        boot_seconds: float = 0.5,
        snapshot_seconds: float = 1.0,
        username: str = "baker",
        password: str = "secret",
        project: str = "demo",
    ):
        self.lock = threading.RLock()
        self.server_factory = server_factory
        self.fixed_ip, self.floating_ip = fixed_ip, floating_ip
        # Every server's sshd listens on this loopback port (a cloud's would use 22).
        self.ssh_port = ssh_port or free_port()
        self.boot_seconds, self.snapshot_seconds = boot_seconds, snapshot_seconds
        self.username, self.password, self.project = username, password, project
        self.faults: set[str] = set()
        self.tokens: dict[str, float] = {}
        self.keypairs: dict[str, dict] = {}
        self.servers: dict[str, dict] = {}
        self.backends: dict[str, object] = {}
        self.stopping: list[threading.Thread] = []
        self.stopped: dict[str, object] = {}
        self.images: dict[str, dict] = {}
        self.secgroups: dict[str, dict] = {}
        self.ports: dict[str, dict] = {}
        self.fips: dict[str, dict] = {}
        self.flavors = {
            "1": {"id": "1", "name": "m1.small", "ram": 2048, "vcpus": 1, "disk": 20},
            "2": {"id": "2", "name": "m1.medium", "ram": 4096, "vcpus": 2, "disk": 40},
        }
        self.networks = {
            "net-private": {
                "id": "3a7e4f0c-7d1e-4a8b-9a55-9d0a8d6f1a01",
                "name": "private",
                "router:external": False,
            },
            "net-public": {
                "id": "8c1f5e2a-2b9d-4c6e-8f3a-0e7d6c5b4a02",
                "name": "public",
                "router:external": True,
            },
        }
        default_sg = self._new_secgroup("default", "Default security group")
        self.secgroups[default_sg["id"]] = default_sg
        base = self.new_image(
            "debian-12",
            status="active",
            properties={"os_distro": "debian", "os_version": "12"},
            visibility="public",
        )
        self.base_image_id = base["id"]

    # -- helpers ----------------------------------------------------------------------------
    def fault(self, name: str) -> bool:
        return name in self.faults

    def new_image(self, name, status="queued", properties=None, visibility="private", **extra) -> dict:
        iid = str(uuid.uuid4())
        img = {
            "id": iid,
            "name": name,
            "status": status,
            "visibility": visibility,
            "protected": False,
            "os_hidden": False,
            "tags": [],
            "container_format": "bare",
            "disk_format": "qcow2",
            "min_disk": 0,
            "min_ram": 0,
            "size": 2147483648 if status == "active" else None,
            "checksum": None,
            "owner": PROJECT_ID,
            "created_at": _now(),
            "updated_at": _now(),
            "self": f"/v2/images/{iid}",
            "file": f"/v2/images/{iid}/file",
            "schema": "/v2/schemas/image",
            **(properties or {}),
            **extra,
        }
        with self.lock:
            self.images[iid] = img
        return img

    def _new_secgroup(self, name, description="") -> dict:
        sid = str(uuid.uuid4())
        rules = [self._rule(sid, "egress", ethertype) for ethertype in ("IPv4", "IPv6")]
        return {
            "id": sid,
            "name": name,
            "description": description,
            "tenant_id": PROJECT_ID,
            "project_id": PROJECT_ID,
            "security_group_rules": rules,
            "stateful": True,
            "tags": [],
            "created_at": _now(),
            "updated_at": _now(),
            "revision_number": 1,
        }

    @staticmethod
    def _rule(sg_id, direction, ethertype="IPv4", **kw) -> dict:
        return {
            "id": str(uuid.uuid4()),
            "security_group_id": sg_id,
            "direction": direction,
            "ethertype": ethertype,
            "protocol": kw.get("protocol"),
            "port_range_min": kw.get("port_range_min"),
            "port_range_max": kw.get("port_range_max"),
            "remote_ip_prefix": kw.get("remote_ip_prefix"),
            "remote_group_id": kw.get("remote_group_id"),
            "description": kw.get("description", ""),
            "tenant_id": PROJECT_ID,
            "project_id": PROJECT_ID,
            "created_at": _now(),
            "updated_at": _now(),
            "revision_number": 0,
        }

    def leftovers(self) -> dict:
        """What a bake could leak: servers, key pairs, non-default security groups, floating IPs."""
        with self.lock:
            return {
                "servers": [s["name"] for s in self.servers.values()],
                "keypairs": list(self.keypairs),
                "security_groups": [g["name"] for g in self.secgroups.values() if g["name"] != "default"],
                "floating_ips": [f["floating_ip_address"] for f in self.fips.values()],
                "ports": [p["id"] for p in self.ports.values()],
            }

    def stop_all(self) -> None:
        with self.lock:
            backends = list(self.backends.values()) + list(self.stopped.values())
            self.backends.clear()
            self.stopped.clear()
            stopping, self.stopping = self.stopping, []
        for t in stopping:
            t.join(timeout=60)
        for b in backends:
            try:
                b.stop()
            except Exception:
                pass


class StandinHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "qw-cloud-standin/1"
    state: CloudState  # set on the subclass made per server
    base_url: str
    request_log: list
    orchestration = None  # a keystoneauth Adapter on a real Heat, or None: no orchestration service

    def log_message(self, fmt, *args):  # quiet: the request log is kept in memory instead
        pass

    # -- plumbing ---------------------------------------------------------------------------
    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise HTTPError(400, "Malformed request body", "badRequest")

    def _send(self, status: int, body=None, headers: dict | None = None, ctype="application/json"):
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if data or status not in (204, 304):
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Openstack-Request-Id", "req-" + str(uuid.uuid4()))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _handle(self, method: str):
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.request_log.append((method, path))
        self._extra_headers = {}
        try:
            body = self._body()
            service, _, rest = path.lstrip("/").partition("/")
            rest = "/" + rest
            if service == "identity":
                status, out = self._identity(method, rest, body)
            else:
                if method != "GET" or rest not in ("/", "/v2.1", "/v2", "/v2.0"):
                    self._auth()
                handler = {
                    "compute": self._compute,
                    "image": self._image,
                    "network": self._network,
                    "orchestration": self._orchestration if self.orchestration else None,
                }.get(service)
                if handler is None:
                    raise HTTPError(404, f"no service at /{service}", "itemNotFound")
                status, out = handler(method, rest, query, body)
            self._send(status, out, self._extra_headers)
        except HTTPError as e:
            self._send(e.status, self._error_body(path, e), self._extra_headers)
        except Exception as e:
            self._send(500, {"computeFault": {"code": 500, "message": f"stand-in error: {e!r}"}})

    def _error_body(self, path, e: HTTPError):
        if path.startswith("/network"):
            return {"NeutronError": {"type": e.kind, "message": e.message, "detail": ""}}
        if path.startswith("/image"):
            return {"code": e.status, "title": e.kind, "message": e.message}
        if path.startswith("/identity"):
            return {"error": {"code": e.status, "title": e.kind, "message": e.message}}
        if path.startswith("/orchestration"):  # heat.api.middleware.fault's shape
            return {
                "code": e.status,
                "title": e.kind,
                "explanation": e.message,
                "error": {"type": e.kind, "message": e.message, "traceback": None},
            }
        return {e.kind: {"code": e.status, "message": e.message}}

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def do_PATCH(self):
        self._handle("PATCH")

    def do_DELETE(self):
        self._handle("DELETE")

    def _auth(self):
        tok = self.headers.get("X-Auth-Token")
        with self.state.lock:
            exp = self.state.tokens.get(tok or "")
        if not exp or exp < time.time():
            raise HTTPError(401, "The request you have made requires authentication.", "Unauthorized")

    # -- Keystone -----------------------------------------------------------------------------
    def _identity(self, method, rest, body):
        b = self.base_url
        v3 = {
            "id": "v3.14",
            "status": "stable",
            "updated": "2020-04-07T00:00:00Z",
            "links": [{"rel": "self", "href": f"{b}/identity/v3/"}],
            "media-types": [
                {"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}
            ],
        }
        if method == "GET" and rest == "/":
            return 300, {"versions": {"values": [v3]}}
        if method == "GET" and rest == "/v3":
            return 200, {"version": v3}
        if method == "POST" and rest == "/v3/auth/tokens":
            ident = ((body or {}).get("auth") or {}).get("identity") or {}
            pw = (ident.get("password") or {}).get("user") or {}
            if (
                "password" not in ident.get("methods", [])
                or pw.get("name") != self.state.username
                or pw.get("password") != self.state.password
            ):
                raise HTTPError(401, "The request you have made requires authentication.", "Unauthorized")
            tok = uuid.uuid4().hex
            with self.state.lock:
                self.state.tokens[tok] = time.time() + 3600
            self._extra_headers["X-Subject-Token"] = tok

            def svc(stype, name, path):
                return {
                    "type": stype,
                    "name": name,
                    "id": uuid.uuid4().hex,
                    "endpoints": [
                        {
                            "id": uuid.uuid4().hex,
                            "interface": i,
                            "region": "RegionOne",
                            "region_id": "RegionOne",
                            "url": f"{b}{path}",
                        }
                        for i in ("public", "internal")
                    ],
                }

            expires = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
            return 201, {
                "token": {
                    "methods": ["password"],
                    "expires_at": expires,
                    "issued_at": _now(),
                    "audit_ids": [uuid.uuid4().hex[:22]],
                    "user": {
                        "id": USER_ID,
                        "name": self.state.username,
                        "domain": {"id": "default", "name": "Default"},
                        "password_expires_at": None,
                    },
                    "project": {
                        "id": PROJECT_ID,
                        "name": self.state.project,
                        "domain": {"id": "default", "name": "Default"},
                    },
                    "roles": [{"id": uuid.uuid4().hex, "name": "member"}],
                    "is_domain": False,
                    "catalog": [
                        svc("identity", "keystone", "/identity/v3"),
                        svc("compute", "nova", "/compute/v2.1"),
                        svc("image", "glance", "/image"),
                        svc("network", "neutron", "/network"),
                    ]
                    + (
                        [svc("orchestration", "heat", f"/orchestration/v1/{PROJECT_ID}")]
                        if self.orchestration
                        else []
                    ),
                }
            }
        if method == "GET" and rest == "/v3/auth/tokens":
            self._auth()
            return 200, {"token": {}}
        raise HTTPError(404, f"{method} {rest} is not supported by the stand-in", "NotFound")

    # -- Nova -------------------------------------------------------------------------------
    def _microversion(self) -> tuple[int, int]:
        hdr = self.headers.get("OpenStack-API-Version") or ""
        m = re.search(r"compute\s+(\d+)\.(\d+|latest)", hdr) or re.search(
            r"(\d+)\.(\d+)", self.headers.get("X-OpenStack-Nova-API-Version") or ""
        )
        if not m:
            v = NOVA_MIN
        elif m.group(2) == "latest":
            v = NOVA_MAX
        else:
            v = (int(m.group(1)), int(m.group(2)))
        if not NOVA_MIN <= v <= NOVA_MAX:
            raise HTTPError(
                406,
                f"Version {v[0]}.{v[1]} is not supported by the API. Minimum is 2.1 and maximum is 2.96.",
                "NotAcceptable",
            )
        self._extra_headers.update(
            {
                "OpenStack-API-Version": f"compute {v[0]}.{v[1]}",
                "X-OpenStack-Nova-API-Version": f"{v[0]}.{v[1]}",
                "Vary": "OpenStack-API-Version, X-OpenStack-Nova-API-Version",
            }
        )
        return v

    def _compute(self, method, rest, query, body):
        st, b = self.state, self.base_url
        version = {
            "id": "v2.1",
            "status": "CURRENT",
            "version": "2.96",
            "min_version": "2.1",
            "updated": "2013-07-23T11:33:21Z",
            "links": [{"rel": "self", "href": f"{b}/compute/v2.1/"}],
        }
        if method == "GET" and rest == "/":
            return 300, {"versions": [version]}
        if method == "GET" and rest == "/v2.1":
            return 200, {"version": version}
        if not rest.startswith("/v2.1/"):
            raise HTTPError(404, "Not found", "itemNotFound")
        mv = self._microversion()
        rest = rest[len("/v2.1") :]
        parts = rest.strip("/").split("/")

        if parts[0] == "flavors":
            flavors = list(st.flavors.values())
            if len(parts) == 1 or parts[1] == "detail":
                return 200, {"flavors": [dict(f, links=[]) for f in flavors]}
            f = st.flavors.get(parts[1])
            if not f:
                raise HTTPError(404, f"Flavor {parts[1]} could not be found.", "itemNotFound")
            return 200, {"flavor": dict(f, links=[])}

        if parts[0] == "os-keypairs":
            if method == "POST":
                if st.fault("keypair.create"):
                    raise HTTPError(500, "Unexpected API Error (injected: keypair.create)", "computeFault")
                kp = (body or {}).get("keypair") or {}
                name, pub = kp.get("name"), kp.get("public_key")
                if not name or not pub:
                    raise HTTPError(
                        400,
                        "Invalid input for field/attribute keypair: 'public_key' is required "
                        "(generation was removed in 2.92)",
                        "badRequest",
                    )
                with st.lock:
                    if name in st.keypairs:
                        raise HTTPError(409, f"Key pair '{name}' already exists.", "conflictingRequest")
                    st.keypairs[name] = {
                        "name": name,
                        "public_key": pub,
                        "type": kp.get("type", "ssh"),
                        "fingerprint": "00:" * 15 + "00",
                        "user_id": USER_ID,
                    }
                return (201 if mv >= (2, 2) else 200), {"keypair": dict(st.keypairs[name])}
            if len(parts) == 1:
                return 200, {"keypairs": [{"keypair": dict(k)} for k in st.keypairs.values()]}
            name = parts[1]
            with st.lock:
                if name not in st.keypairs:
                    raise HTTPError(404, f"Keypair {name} not found for user {USER_ID}", "itemNotFound")
                if method == "DELETE":
                    del st.keypairs[name]
                    return (204 if mv >= (2, 2) else 202), None
                return 200, {"keypair": dict(st.keypairs[name], id=1, deleted=False, created_at=_now())}

        if parts[0] == "servers":
            if method == "POST" and len(parts) == 1:
                return self._server_create((body or {}).get("server") or {})
            if len(parts) == 1 or parts[1] == "detail":
                with st.lock:
                    servers = [self._server_view(s) for s in st.servers.values()]
                if "image" in query:
                    servers = [s for s in servers if s["image"] and s["image"]["id"] == query["image"]]
                if "name" in query:
                    servers = [s for s in servers if re.search(query["name"], s["name"])]
                if len(parts) == 1:
                    servers = [{"id": s["id"], "name": s["name"], "links": s["links"]} for s in servers]
                return 200, {"servers": servers}
            sid = parts[1]
            with st.lock:
                srv = st.servers.get(sid)
            if srv is None:
                raise HTTPError(404, f"Instance {sid} could not be found.", "itemNotFound")
            if len(parts) == 2 and method == "GET":
                return 200, {"server": self._server_view(srv)}
            if len(parts) == 2 and method == "DELETE":
                self._server_delete(srv)
                return 204, None
            if len(parts) == 3 and parts[2] == "action" and method == "POST":
                return self._server_action(srv, body or {}, mv)
        raise HTTPError(404, f"{method} {rest} is not supported by the stand-in", "itemNotFound")

    def _server_view(self, s: dict) -> dict:
        st = self.state
        addrs = []
        with st.lock:
            for p in st.ports.values():
                if p["device_id"] == s["id"]:
                    addrs.append(
                        {
                            "addr": p["fixed_ips"][0]["ip_address"],
                            "version": 4,
                            "OS-EXT-IPS:type": "fixed",
                            "OS-EXT-IPS-MAC:mac_addr": p["mac_address"],
                        }
                    )
                    for f in st.fips.values():
                        if f["port_id"] == p["id"]:
                            addrs.append(
                                {
                                    "addr": f["floating_ip_address"],
                                    "version": 4,
                                    "OS-EXT-IPS:type": "floating",
                                    "OS-EXT-IPS-MAC:mac_addr": p["mac_address"],
                                }
                            )
        view = {k: v for k, v in s.items() if not k.startswith("_")}
        view["addresses"] = {"private": addrs} if addrs else {}
        view["links"] = [{"rel": "self", "href": f"{self.base_url}/compute/v2.1/servers/{s['id']}"}]
        return view

    def _server_create(self, req: dict):
        st = self.state
        if st.fault("server.create"):
            raise HTTPError(500, "Unexpected API Error (injected: server.create)", "computeFault")
        for key in ("name", "flavorRef"):
            if not req.get(key):
                raise HTTPError(
                    400,
                    f"Invalid input for field/attribute server: '{key}' is a required property",
                    "badRequest",
                )
        flavor = st.flavors.get(str(req["flavorRef"]))
        if flavor is None:
            raise HTTPError(400, f"Flavor {req['flavorRef']} could not be found.", "badRequest")
        with st.lock:
            image = st.images.get(req.get("imageRef") or "")
            if image is None or image["status"] != "active":
                raise HTTPError(400, f"Image {req.get('imageRef')} could not be found.", "badRequest")
            kp = st.keypairs.get(req.get("key_name") or "")
            if req.get("key_name") and kp is None:
                raise HTTPError(400, "Invalid key_name provided.", "badRequest")
            groups = []
            for g in req.get("security_groups") or [{"name": "default"}]:
                match = [x for x in st.secgroups.values() if g["name"] in (x["name"], x["id"])]
                if not match:
                    raise HTTPError(
                        400, f"Security group {g['name']} not found for project {PROJECT_ID}.", "badRequest"
                    )
                groups.append(match[0])
            nets = req.get("networks") or [{"uuid": st.networks["net-private"]["id"]}]
            if nets in ("auto", "none"):
                nets = [{"uuid": st.networks["net-private"]["id"]}]
            sid = str(uuid.uuid4())
            srv = {
                "id": sid,
                "name": req["name"],
                "status": "BUILD",
                "OS-EXT-STS:vm_state": "building",
                "OS-EXT-STS:task_state": "spawning",
                "OS-EXT-STS:power_state": 0,
                "tenant_id": PROJECT_ID,
                "user_id": USER_ID,
                "key_name": req.get("key_name"),
                "image": {"id": image["id"], "links": []},
                "flavor": {
                    "original_name": flavor["name"],
                    "vcpus": flavor["vcpus"],
                    "ram": flavor["ram"],
                    "disk": flavor["disk"],
                    "ephemeral": 0,
                    "swap": 0,
                    "extra_specs": {},
                },
                "security_groups": [{"name": g["name"]} for g in groups],
                "metadata": req.get("metadata") or {},
                "created": _now(),
                "updated": _now(),
                "hostId": uuid.uuid4().hex,
                "OS-DCF:diskConfig": "MANUAL",
                "accessIPv4": "",
                "accessIPv6": "",
                "progress": 0,
                "config_drive": "",
                "OS-EXT-AZ:availability_zone": "nova",
                "_console": "",
            }
            st.servers[sid] = srv
            for n in nets:
                net_id = n.get("uuid") or n.get("port")
                pid = str(uuid.uuid4())
                st.ports[pid] = {
                    "id": pid,
                    "name": "",
                    "network_id": net_id,
                    "device_id": sid,
                    "device_owner": "compute:nova",
                    "status": "DOWN",
                    "admin_state_up": True,
                    "mac_address": "fa:16:3e:%02x:%02x:%02x" % tuple(uuid.uuid4().bytes[:3]),
                    "fixed_ips": [{"subnet_id": str(uuid.uuid4()), "ip_address": st.fixed_ip}],
                    "security_groups": [g["id"] for g in groups],
                    "tenant_id": PROJECT_ID,
                    "project_id": PROJECT_ID,
                    "created_at": _now(),
                    "updated_at": _now(),
                }
        threading.Thread(target=self._boot, args=(srv, kp), daemon=True).start()
        self._extra_headers["Location"] = f"{self.base_url}/compute/v2.1/servers/{sid}"
        return 202, {
            "server": {
                "id": sid,
                "links": [{"rel": "self", "href": self._extra_headers["Location"]}],
                "OS-DCF:diskConfig": "MANUAL",
                "security_groups": srv["security_groups"],
                "adminPass": uuid.uuid4().hex[:12],
            }
        }

    def _boot(self, srv: dict, kp: dict | None):
        st = self.state
        time.sleep(st.boot_seconds)
        try:
            if st.fault("server.error"):
                raise RuntimeError("injected: server.error")
            backend = st.server_factory(kp["public_key"] if kp else "", st.ssh_port)
            backend.start()
        except Exception as e:
            with st.lock:
                srv.update(
                    {
                        "status": "ERROR",
                        "OS-EXT-STS:vm_state": "error",
                        "OS-EXT-STS:task_state": None,
                        "fault": {
                            "code": 500,
                            "message": f"Build of instance aborted: {e}",
                            "created": _now(),
                        },
                    }
                )
            return
        with st.lock:
            if srv["id"] not in st.servers:  # deleted while building
                backend.stop()
                return
            st.backends[srv["id"]] = backend
            srv["_console"] = "" if st.fault("console.nokey") else backend.console_log()
            srv.update(
                {
                    "status": "ACTIVE",
                    "OS-EXT-STS:vm_state": "active",
                    "OS-EXT-STS:task_state": None,
                    "OS-EXT-STS:power_state": 1,
                    "updated": _now(),
                }
            )
            for p in st.ports.values():
                if p["device_id"] == srv["id"]:
                    p["status"] = "ACTIVE"

    def _server_delete(self, srv):
        st = self.state
        with st.lock:
            st.servers.pop(srv["id"], None)
            backend = st.backends.pop(srv["id"], None) or st.stopped.pop(srv["id"], None)
            for pid in [p["id"] for p in st.ports.values() if p["device_id"] == srv["id"]]:
                del st.ports[pid]
                for f in st.fips.values():
                    if f["port_id"] == pid:
                        f.update(port_id=None, fixed_ip_address=None, status="DOWN")
        if backend is not None:  # the server is gone at once; its host winds down in the background
            t = threading.Thread(target=backend.stop, daemon=True)
            t.start()
            with st.lock:
                st.stopping.append(t)

    def _server_action(self, srv, body, mv):
        st = self.state
        if "os-getConsoleOutput" in body:
            if srv["status"] not in ("ACTIVE", "SHUTOFF"):
                raise HTTPError(
                    409,
                    f"Cannot 'get_console_output' instance {srv['id']} while it is in "
                    f"vm_state {srv['OS-EXT-STS:vm_state']}",
                    "conflictingRequest",
                )
            out = srv.get("_console", "")
            length = (body["os-getConsoleOutput"] or {}).get("length")
            if length not in (None, -1):
                out = "\n".join(out.splitlines()[-int(length) :])
            return 200, {"output": out}
        if "os-stop" in body:
            if st.fault("server.stop"):
                raise HTTPError(500, "Unexpected API Error (injected: server.stop)", "computeFault")
            if srv["status"] != "ACTIVE":
                raise HTTPError(
                    409,
                    f"Cannot 'stop' instance {srv['id']} while it is in vm_state "
                    f"{srv['OS-EXT-STS:vm_state']}",
                    "conflictingRequest",
                )
            with st.lock:
                backend = st.backends.pop(srv["id"], None)
                srv["OS-EXT-STS:task_state"] = "powering-off"

            def power_off():  # asynchronous, as in Nova: the caller polls for SHUTOFF
                if backend is not None:  # powered off: sshd is gone, as on a real server
                    getattr(backend, "power_off", backend.stop)()
                    with st.lock:
                        st.stopped[srv["id"]] = backend  # its disk stays until the server is deleted
                with st.lock:
                    srv.update(
                        {
                            "status": "SHUTOFF",
                            "OS-EXT-STS:vm_state": "stopped",
                            "OS-EXT-STS:task_state": None,
                            "OS-EXT-STS:power_state": 4,
                        }
                    )

            threading.Thread(target=power_off, daemon=True).start()
            return 202, None
        if "createImage" in body:
            if st.fault("server.create_image"):
                raise HTTPError(500, "Unexpected API Error (injected: server.create_image)", "computeFault")
            req = body["createImage"] or {}
            if not req.get("name"):
                raise HTTPError(400, "Invalid input for field/attribute name.", "badRequest")
            if srv["status"] not in ("ACTIVE", "SHUTOFF"):
                raise HTTPError(
                    409,
                    f"Cannot 'createImage' instance {srv['id']} while it is in vm_state "
                    f"{srv['OS-EXT-STS:vm_state']}",
                    "conflictingRequest",
                )
            meta = {str(k): str(v) for k, v in (req.get("metadata") or {}).items()}
            img = st.new_image(
                req["name"],
                status="queued",
                properties={
                    **meta,
                    "image_type": "snapshot",
                    "instance_uuid": srv["id"],
                    "base_image_ref": srv["image"]["id"],
                    "user_id": USER_ID,
                    "owner_project_name": st.project,
                    "boot_roles": "member",
                },
            )
            threading.Thread(target=self._snapshot, args=(img,), daemon=True).start()
            if mv >= (2, 45):
                return 202, {"image_id": img["id"]}
            self._extra_headers["Location"] = f"{self.base_url}/image/v2/images/{img['id']}"
            return 202, None
        raise HTTPError(400, f"Unsupported server action: {', '.join(body) or 'none'}", "badRequest")

    def _snapshot(self, img):
        st = self.state
        time.sleep(st.snapshot_seconds / 2)
        with st.lock:
            if img["id"] not in st.images:
                return
            img.update(status="saving", updated_at=_now())
        if st.fault("image.stuck"):
            return
        time.sleep(st.snapshot_seconds / 2)
        with st.lock:
            if img["id"] not in st.images:
                return
            if st.fault("image.killed"):
                img.update(status="killed", updated_at=_now())
            else:
                img.update(
                    status="active",
                    size=1073741824,
                    checksum=uuid.uuid4().hex,
                    os_hash_algo="sha512",
                    updated_at=_now(),
                )

    # -- Glance -----------------------------------------------------------------------------
    def _image(self, method, rest, query, body):
        st, b = self.state, self.base_url
        if method == "GET" and rest in ("/", "/v2"):
            return 300 if rest == "/" else 200, {
                "versions": [
                    {
                        "id": "v2.16",
                        "status": "CURRENT",
                        "links": [{"rel": "self", "href": f"{b}/image/v2/"}],
                    },
                    {
                        "id": "v2.0",
                        "status": "SUPPORTED",
                        "links": [{"rel": "self", "href": f"{b}/image/v2/"}],
                    },
                ]
            }
        m = re.fullmatch(r"/v2/images(?:/([^/]+))?", rest)
        if not m:
            raise HTTPError(404, f"{method} {rest} is not supported by the stand-in", "Not Found")
        iid = m.group(1)
        if iid is None and method == "GET":
            with st.lock:
                images = [dict(i) for i in st.images.values()]
            reserved = {"limit", "marker", "sort", "sort_key", "sort_dir", "member_status"}
            for k, v in query.items():
                if k in reserved:
                    continue
                images = [i for i in images if str(i.get(k)) == v or (k == "visibility" and v == "all")]
            images.sort(key=lambda i: i["created_at"], reverse=True)
            return 200, {"images": images, "first": "/v2/images", "schema": "/v2/schemas/images"}
        with st.lock:
            img = st.images.get(iid or "")
            if img is None:
                raise HTTPError(404, f"No image found with ID {iid}", "Not Found")
            if method == "GET":
                return 200, dict(img)
            if method == "DELETE":
                if img.get("protected"):
                    raise HTTPError(403, f"Image {iid} is protected and cannot be deleted.", "Forbidden")
                del st.images[iid]
                return 204, None
            if method == "PATCH":
                if "openstack-images-v2.1-json-patch" not in (self.headers.get("Content-Type") or ""):
                    raise HTTPError(415, "Unsupported Content-Type", "Unsupported Media Type")
                for op in body or []:
                    key = op["path"].lstrip("/")
                    if key in ("id", "status", "created_at", "updated_at", "self", "file", "schema", "size"):
                        raise HTTPError(403, f"Attribute '{key}' is read-only.", "Forbidden")
                    if op["op"] in ("add", "replace"):
                        img[key] = op["value"]
                    elif op["op"] == "remove":
                        img.pop(key, None)
                img["updated_at"] = _now()
                return 200, dict(img)
        raise HTTPError(405, f"{method} not allowed", "Method Not Allowed")

    # -- Neutron ----------------------------------------------------------------------------
    def _network(self, method, rest, query, body):
        st, b = self.state, self.base_url
        if method == "GET" and rest in ("/", "/v2.0"):
            return 200, {
                "versions": [
                    {
                        "id": "v2.0",
                        "status": "CURRENT",
                        "links": [{"rel": "self", "href": f"{b}/network/v2.0/"}],
                    }
                ]
            }
        m = re.fullmatch(r"/v2\.0/([a-z-]+?)(?:\.json)?(?:/([^/]+))?", rest)
        if not m:
            raise HTTPError(404, f"{method} {rest} is not supported by the stand-in", "HTTPNotFound")
        coll, rid = m.group(1), m.group(2)

        def listing(items, key):
            items = [dict(i) for i in items]
            for k, v in query.items():
                if k in ("fields", "limit", "marker", "sort_key", "sort_dir"):
                    continue
                items = [i for i in items if str(i.get(k)).lower() == v.lower()]
            return 200, {key: items}

        with st.lock:
            if coll == "networks":
                nets = [
                    dict(
                        n,
                        status="ACTIVE",
                        admin_state_up=True,
                        subnets=[],
                        shared=False,
                        tenant_id=PROJECT_ID,
                        project_id=PROJECT_ID,
                    )
                    for n in st.networks.values()
                ]
                if rid:
                    match = [n for n in nets if n["id"] == rid]
                    if not match:
                        raise HTTPError(404, f"Network {rid} could not be found.", "NetworkNotFound")
                    return 200, {"network": match[0]}
                return listing(nets, "networks")
            if coll == "ports":
                if rid:
                    if rid not in st.ports:
                        raise HTTPError(404, f"Port {rid} could not be found.", "PortNotFound")
                    return 200, {"port": dict(st.ports[rid])}
                return listing(st.ports.values(), "ports")
            if coll == "security-groups":
                if method == "POST":
                    if st.fault("secgroup.create"):
                        raise HTTPError(
                            500,
                            "Request Failed: internal server error (injected: secgroup.create)",
                            "HTTPInternalServerError",
                        )
                    req = (body or {}).get("security_group") or {}
                    if not req.get("name"):
                        raise HTTPError(400, "Invalid input for name.", "HTTPBadRequest")
                    sg = st._new_secgroup(req["name"], req.get("description", ""))
                    st.secgroups[sg["id"]] = sg
                    return 201, {"security_group": dict(sg)}
                if rid is None:
                    return listing(st.secgroups.values(), "security_groups")
                sg = st.secgroups.get(rid)
                if sg is None:
                    raise HTTPError(404, f"Security group {rid} does not exist", "SecurityGroupNotFound")
                if method == "DELETE":
                    if any(rid in p["security_groups"] for p in st.ports.values()):
                        raise HTTPError(409, f"Security Group {rid} in use.", "SecurityGroupInUse")
                    del st.secgroups[rid]
                    return 204, None
                return 200, {"security_group": dict(sg)}
            if coll == "security-group-rules":
                if method == "POST":
                    if st.fault("secgroup_rule.create"):
                        raise HTTPError(
                            500,
                            "Request Failed: internal server error (injected: secgroup_rule.create)",
                            "HTTPInternalServerError",
                        )
                    req = (body or {}).get("security_group_rule") or {}
                    sg = st.secgroups.get(req.get("security_group_id") or "")
                    if sg is None:
                        raise HTTPError(404, "Security group not found", "SecurityGroupNotFound")
                    if req.get("direction") not in ("ingress", "egress"):
                        raise HTTPError(400, "Invalid input for direction.", "HTTPBadRequest")
                    kw = {
                        k: v
                        for k, v in req.items()
                        if k not in ("security_group_id", "direction", "ethertype")
                    }
                    rule = st._rule(sg["id"], req["direction"], req.get("ethertype", "IPv4"), **kw)
                    sg["security_group_rules"].append(rule)
                    return 201, {"security_group_rule": rule}
                rules = [r for g in st.secgroups.values() for r in g["security_group_rules"]]
                if rid is None:
                    return listing(rules, "security_group_rules")
                rule = next((r for r in rules if r["id"] == rid), None)
                if rule is None:
                    raise HTTPError(
                        404, f"Security group rule {rid} does not exist", "SecurityGroupRuleNotFound"
                    )
                if method == "DELETE":
                    st.secgroups[rule["security_group_id"]]["security_group_rules"].remove(rule)
                    return 204, None
                return 200, {"security_group_rule": rule}
            if coll == "floatingips":
                if method == "POST":
                    if st.fault("fip.create"):
                        raise HTTPError(
                            500,
                            "Request Failed: internal server error (injected: fip.create)",
                            "HTTPInternalServerError",
                        )
                    req = (body or {}).get("floatingip") or {}
                    net = next(
                        (n for n in st.networks.values() if n["id"] == req.get("floating_network_id")), None
                    )
                    if net is None or not net["router:external"]:
                        raise HTTPError(
                            400,
                            f"Bad floatingip request: Network {req.get('floating_network_id')} "
                            "is not a valid external network.",
                            "BadRequest",
                        )
                    fid = str(uuid.uuid4())
                    fip = {
                        "id": fid,
                        "floating_ip_address": st.floating_ip,
                        "floating_network_id": net["id"],
                        "port_id": None,
                        "fixed_ip_address": None,
                        "router_id": None,
                        "status": "DOWN",
                        "description": req.get("description", ""),
                        "tenant_id": PROJECT_ID,
                        "project_id": PROJECT_ID,
                        "created_at": _now(),
                        "updated_at": _now(),
                        "tags": [],
                    }
                    st.fips[fid] = fip
                    self._fip_associate(fip, req.get("port_id"))
                    return 201, {"floatingip": dict(fip)}
                if rid is None:
                    return listing(st.fips.values(), "floatingips")
                fip = st.fips.get(rid)
                if fip is None:
                    raise HTTPError(404, f"Floating IP {rid} could not be found", "FloatingIPNotFound")
                if method == "PUT":
                    self._fip_associate(fip, ((body or {}).get("floatingip") or {}).get("port_id"))
                    return 200, {"floatingip": dict(fip)}
                if method == "DELETE":
                    del st.fips[rid]
                    return 204, None
                return 200, {"floatingip": dict(fip)}
        raise HTTPError(404, f"{method} {rest} is not supported by the stand-in", "HTTPNotFound")

    # -- Heat (passed through to a real one) --------------------------------------------------
    def _orchestration(self, method, rest, query, body):
        prefix = f"/v1/{PROJECT_ID}"
        if method == "GET" and rest == "/":  # version discovery, as Heat answers it
            return 300, {
                "versions": [
                    {
                        "id": "v1.0",
                        "status": "CURRENT",
                        "links": [{"rel": "self", "href": f"{self.base_url}/orchestration/v1/"}],
                    }
                ]
            }
        if rest != prefix and not rest.startswith(prefix + "/"):
            raise HTTPError(404, f"{rest}: the orchestration API is at /v1/{PROJECT_ID}", "NotFound")
        if (
            self.state.fault("stack.forbidden")
            and method == "GET"
            and re.match(r"/stacks/[^/]+", rest[len(prefix) :])
        ):
            raise HTTPError(403, "You are not authorized to complete stacks:show.", "Forbidden")
        resp = self.orchestration.request(
            rest[len(prefix) :] or "/", method, json=body, params=query, raise_exc=False
        )
        try:
            return resp.status_code, (resp.json() if resp.content else None)
        except ValueError:  # Heat answered something else than JSON: pass it on as text
            raise HTTPError(resp.status_code, resp.text, "HeatError")

    def _fip_associate(self, fip, port_id):
        st = self.state
        if port_id is None:
            fip.update(port_id=None, fixed_ip_address=None, status="DOWN")
            return
        port = st.ports.get(port_id)
        if port is None:
            raise HTTPError(404, f"Port {port_id} could not be found.", "PortNotFound")
        fip.update(
            port_id=port_id,
            fixed_ip_address=port["fixed_ips"][0]["ip_address"],
            status="ACTIVE",
            router_id=str(uuid.uuid4()),
            updated_at=_now(),
        )


class CloudStandin:
    """Run the stand-in on 127.0.0.1 (a free port unless given). `with CloudStandin(factory) as cloud:`."""

    def __init__(self, server_factory, port: int = 0, orchestration=None, **state_kw):
        self.state = CloudState(server_factory, **state_kw)
        self.request_log: list = []
        handler = type(
            "Handler",
            (StandinHandler,),
            {"state": self.state, "request_log": self.request_log, "orchestration": orchestration},
        )
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        handler.base_url = self.url
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def auth_url(self) -> str:
        return f"{self.url}/identity/v3"

    def cloud_config(self) -> dict:
        """A clouds.yaml entry for this stand-in."""
        return {
            "auth": {
                "auth_url": self.auth_url,
                "username": self.state.username,
                "password": self.state.password,
                "project_name": self.state.project,
                "user_domain_name": "Default",
                "project_domain_name": "Default",
            },
            "region_name": "RegionOne",
            "identity_api_version": 3,
            "interface": "public",
        }

    def start(self) -> CloudStandin:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.state.stop_all()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
