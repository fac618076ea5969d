from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "example_project.orders"
    label = "app_order"
    verbose_name = "Orders"
