<?php

namespace App\Http\Controllers;

use App\Jobs\ProcessNote;
use App\Support\Release;
use Illuminate\Http\Request;
use Illuminate\Routing\Controller;
use Illuminate\Support\Facades\DB;

class NotesController extends Controller
{
    public function home()
    {
        return response(view('home', ['release' => Release::id(), 'notes' => DB::table('notes')->count()]));
    }

    public function store(Request $request)
    {
        $text = (string) $request->input('text', '');
        if ($text === '') {
            return response()->json(['error' => 'text is required'], 422);
        }
        $id = DB::table('notes')->insertGetId(['text' => $text, 'created_at' => now()]);
        ProcessNote::dispatch($id);

        return response()->json($this->json(DB::table('notes')->find($id)), 201);
    }

    public function show(int $id)
    {
        $note = DB::table('notes')->find($id);

        return $note === null ? response()->json(['error' => 'not found'], 404) : response()->json($this->json($note));
    }

    private function json(object $note): array
    {
        return ['id' => $note->id, 'text' => $note->text, 'processed' => $note->processed_at !== null];
    }
}
