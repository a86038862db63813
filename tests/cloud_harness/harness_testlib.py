"""Helpers of the local-deployment tests (a module of its own: several conftest.py files share one name).

:func:`project_resources` lists everything a stack could leave in the local cloud (Keystone
application credentials and access rules of the demo user, Heat stacks, Zaqar queues, and with
Nova/Neutron/Glance in the catalog: servers, security groups, ports, images), so a test compares
the lists before ``up`` and after ``destroy``.
"""

from __future__ import annotations

import uuid

from keystoneauth1 import adapter


class Project:
    """The demo user's view of the local cloud (role member on project demo)."""

    def __init__(self, session):
        self.session = session
        self.user = session.get_user_id()
        self.identity = adapter.Adapter(session, service_type="identity", interface="public")
        self.orchestration = adapter.Adapter(session, service_type="orchestration", interface="public")
        self.messaging = adapter.Adapter(session, service_type="messaging", interface="public")
        self.client_id = {"Client-ID": str(uuid.uuid4())}
        catalog = session.auth.get_access(session).service_catalog.catalog
        self.services = {s["type"] for s in catalog if s.get("endpoints")}

    def credentials(self) -> dict[str, dict]:
        body = self.identity.get(f"/users/{self.user}/application_credentials").json()
        return {c["id"]: c for c in body["application_credentials"]}

    def access_rules(self) -> set[str]:
        return {r["id"] for r in self.identity.get(f"/users/{self.user}/access_rules").json()["access_rules"]}

    def stacks(self) -> set[str]:
        body = self.orchestration.get("/stacks", params={"show_nested": True}).json()
        return {s["id"] for s in body["stacks"]}

    def queues(self) -> set[str]:
        names, marker = set(), None
        while True:
            params = {"limit": 20, **({"marker": marker} if marker else {})}
            resp = self.messaging.get("/v2/queues", params=params, headers=self.client_id)
            page = resp.json().get("queues", []) if resp.status_code == 200 else []
            if not page:
                return names
            names |= {q["name"] for q in page}
            marker = page[-1]["name"]

    def queue(self, name: str) -> dict:
        resp = self.messaging.get(f"/v2/queues/{name}", headers=self.client_id, raise_exc=False)
        assert resp.status_code == 200, resp.text
        return resp.json()


def project_resources(project: Project) -> dict[str, set]:
    """Everything of the project a deployment could leave behind, by kind (ids or names)."""
    found = {
        "application credentials": set(project.credentials()),
        "access rules": project.access_rules(),
        "heat stacks": project.stacks(),
        "zaqar queues": project.queues(),
    }
    if {"compute", "network", "image"} <= project.services:
        import openstack

        conn = openstack.connection.Connection(session=project.session)
        found["nova servers"] = {s.id for s in conn.compute.servers()}
        found["neutron security groups"] = {g.id for g in conn.network.security_groups()}
        found["neutron ports"] = {p.id for p in conn.network.ports()}
        found["glance images"] = {i.id for i in conn.image.images()}
    return found
