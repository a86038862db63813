"""fab tasks. Thin: the tasks live in images/tasks.py, the bake steps in images/.

fab --list
fab --help bake-template
fab bake-template --cloud mycloud --region RegionOne
fab prune-templates --keep 3
"""

from invoke import Collection

from images import tasks as image_tasks

ns = Collection()
ns.add_task(image_tasks.bake_template)
ns.add_task(image_tasks.prune_templates)
