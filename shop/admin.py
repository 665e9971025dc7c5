from django.contrib import admin

from tasks_admin.adminkit import AccessibleAdminMixin, ActionPermissionMixin

from .models import Category, Product


@admin.register(Category)
class CategoryAdmin(AccessibleAdminMixin, ActionPermissionMixin, admin.ModelAdmin):
    list_display = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    search_fields = ("name",)


@admin.register(Product)
class ProductAdmin(AccessibleAdminMixin, ActionPermissionMixin, admin.ModelAdmin):
    list_display = ("name", "sku", "category", "price", "stock", "units_sold", "active")
    list_filter = ("active", "category")
    list_editable = ("price", "stock", "active")
    list_select_related = ("category",)
    search_fields = ("name", "=sku")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("units_sold", "created_at", "updated_at")
