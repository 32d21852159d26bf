from django.urls import path

from products.api import views

# Mounted under /api/ (config/urls.py): the list is /api/products, a product /api/products/{id}.
products_urlpatterns = [
    path("products", views.ProductListView.as_view(), name="products"),
    path("products/<int:product_id>", views.ProductDetailView.as_view(), name="product-detail"),
]
