from django.apps import AppConfig


class UsersConfig(AppConfig):
    name = "example_project.users"
    label = "app_user"
    verbose_name = "Users"
