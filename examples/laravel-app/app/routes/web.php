<?php

use App\Http\Controllers\HealthController;
use App\Http\Controllers\NotesController;
use Illuminate\Support\Facades\Route;

Route::get('/', [NotesController::class, 'home']);
Route::get('/health', HealthController::class);
Route::post('/notes', [NotesController::class, 'store']);
Route::get('/notes/{id}', [NotesController::class, 'show'])->whereNumber('id');
