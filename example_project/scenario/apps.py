from django.apps import AppConfig


class ScenarioConfig(AppConfig):
    name = "example_project.scenario"
    label = "scenario"
    verbose_name = "Example scenario"
