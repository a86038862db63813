"""Names of the Glance properties a bake writes on the template image.

The bake (images/bake.py) writes them, the stack's image lookup (infra/components/image.py) and
`fab prune-templates` read them. A module with no imports, so `pulumi up` does not load the
bake's Fabric, Paramiko and openstacksdk code to know a name.
"""

P_NAME = "qw_template_name"
P_VERSION = "qw_template_version"
P_HASH = "qw_template_hash"
P_STATE = "qw_bake_state"  # baking -> complete; only `complete` is a usable template
P_DIGEST = "qw_workload_image_digest"
P_COMMIT = "qw_git_commit"
P_BASE_ID = "qw_base_image_id"
P_BASE_NAME = "qw_base_image_name"
P_TIME = "qw_bake_time"
P_DOCKER = "qw_docker_method"
# The further container images (--extra-image) as tag@<12 hex of the image id>, comma-separated.
P_EXTRA = "qw_extra_images"

STATE_BAKING, STATE_COMPLETE = "baking", "complete"
